#!/usr/bin/env bash
# Prepares the official Java client suite (tests/java) the way the test harness
# (tests/src/java.rs) would: checks the JDK and Maven, resolves rocketmq-client-java from Maven
# Central, compiles the scenarios into target/ and writes the build stamp, so that the tests
# find the build up to date and do not run Maven themselves. CI runs this from the repository
# root before the tests (`bash tests/java/prepare.sh`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# Keep in step with tests/src/java.rs (MIN_JAVA, MAVEN_ARGS, STAMP_FILE, MAIN_CLASS).
min_java=17
stamp=target/rocketlog-build.stamp
main_class=org.rocketlog.compat.Main

java=java
if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
  java="$JAVA_HOME/bin/java"
fi
if ! version=$("$java" -version 2>&1); then
  echo "tests/java: \`$java -version\` failed (is a JDK $min_java+ installed?):" >&2
  echo "$version" >&2
  exit 1
fi
echo "$version" | head -1
major=$(echo "$version" | sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' | head -1)
read -r first second <<<"$major"
if [ "${first:-0}" = 1 ]; then first=${second:-0}; fi
if [ "${first:-0}" -lt "$min_java" ]; then
  echo "tests/java: $java is not Java $min_java or newer" >&2
  exit 1
fi
if ! mvn_version=$(mvn -v 2>&1); then
  echo "tests/java: \`mvn -v\` failed (is Maven 3 installed?):" >&2
  echo "$mvn_version" >&2
  exit 1
fi
echo "$mvn_version" | head -1 | sed 's/\x1b\[[0-9;]*m//g'

rm -f "$stamp"
# Maven 3.8 prints colour resets even in batch mode; drop them.
mvn --batch-mode --quiet compile 2>&1 | sed 's/\x1b\[[0-9;]*m//g'
test -f "target/classes/${main_class//.//}.class" || { echo "tests/java: the build left no $main_class" >&2; exit 1; }
ls target/lib/rocketmq-client-java-*.jar

# The classpath works: without arguments the program loads the client and prints its usage.
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
set +e
HOME="$home" "$java" -cp "target/classes:target/lib/*" "$main_class" 2>"$home/usage"
status=$?
set -e
if [ "$status" != 2 ] || ! grep -q '^usage:' "$home/usage"; then
  echo "tests/java: the built program did not start (exit $status):" >&2
  cat "$home/usage" >&2
  exit 1
fi

echo "tests/java built by prepare.sh" >"$stamp"
echo "tests/java ready: $(ls target/lib | tr '\n' ' ')"
