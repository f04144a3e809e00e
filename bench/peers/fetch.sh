#!/usr/bin/env bash
# Fetches the peers that bench/peers/run.sh measures rocketlog against, from Maven Central only
# (no binary distributions), into bench/peers/.cache (ignored by git):
#
#   .cache/rocketmq-$ROCKETMQ_VERSION/lib    Apache RocketMQ 5: namesrv, broker, proxy, tools
#   .cache/kafka-$KAFKA_VERSION/lib          Kafka 4 (kafka_2.13) and kafka-tools
#   .cache/java-client-$CLIENT_VERSION/lib   the official RocketMQ 5 Java client (gRPC)
#   .cache/classes-.../                      the two small Java load generators in java/
#
#   bench/peers/fetch.sh            versions: ROCKETMQ_VERSION (5.5.0), KAFKA_VERSION (4.4.0),
#                                   CLIENT_VERSION (5.2.0)
#
# Each folder is complete once its `complete` marker exists; a second run fetches nothing.
# Needs java (17 or newer), javac and mvn on PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
ROCKETMQ_VERSION=${ROCKETMQ_VERSION:-5.5.0}
KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
CLIENT_VERSION=${CLIENT_VERSION:-5.2.0}

for tool in java javac mvn; do
  command -v "$tool" >/dev/null || { echo "fetch.sh: $tool is not on PATH" >&2; exit 1; }
done

# copy POM PROPERTY VERSION DEST: the POM's dependencies (runtime scope) into DEST/lib.
copy() {
  local pom=$1 property=$2 version=$3 dest=$4
  if [ -f "$dest/complete" ]; then return; fi
  echo "fetch.sh: resolving $(basename "$pom" .pom.xml) $version from Maven Central" >&2
  rm -rf "$dest"
  mkdir -p "$dest/lib"
  mvn -B -q -f "$pom" "-D$property=$version" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dest/lib" >&2
  touch "$dest/complete"
}

copy "$here/maven/rocketmq.pom.xml" rocketmq.version "$ROCKETMQ_VERSION" "$cache/rocketmq-$ROCKETMQ_VERSION"
copy "$here/maven/kafka.pom.xml" kafka.version "$KAFKA_VERSION" "$cache/kafka-$KAFKA_VERSION"
copy "$here/maven/java-client.pom.xml" client.version "$CLIENT_VERSION" "$cache/java-client-$CLIENT_VERSION"

# compile SOURCE CLASSPATH DEST: one load generator, against the class path it runs with.
compile() {
  local source=$1 classpath=$2 dest=$3
  if [ -f "$dest/complete" ] && [ "$dest/complete" -nt "$source" ]; then return; fi
  rm -rf "$dest"
  mkdir -p "$dest"
  javac -nowarn -d "$dest" -cp "$classpath" "$source" >&2
  touch "$dest/complete"
}
compile "$here/java/GrpcProduceBench.java" "$cache/java-client-$CLIENT_VERSION/lib/*" \
  "$cache/classes-grpc-$CLIENT_VERSION"
compile "$here/java/RemotingBatchBench.java" "$cache/rocketmq-$ROCKETMQ_VERSION/lib/*" \
  "$cache/classes-remoting-$ROCKETMQ_VERSION"
echo "fetch.sh: peers ready in $cache" >&2
