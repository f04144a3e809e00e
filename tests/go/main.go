// Command rocketlog-go-compat runs one compatibility scenario of the official Apache
// RocketMQ 5 Go client (github.com/apache/rocketmq-clients/golang/v5, unmodified, with its
// defaults) against a broker:
//
//	rocketlog-go-compat <scenario> <host:port> <suffix>
//
// It prints its steps and, last, `PASS <scenario>` or `FAIL <scenario>: <reason>`; it exits 0
// only on PASS (1: failed, 2: bad invocation, 3: the hard timeout fired). Topic and group
// names end in -<suffix>. Tuning that must match the broker comes from the environment:
// ROCKETLOG_SCENARIO_TIMEOUT (hard limit, s), ROCKETLOG_INVISIBLE_SECS (invisible duration of
// receives), ROCKETLOG_AWAIT_SECS (long-polling wait of simple consumers),
// ROCKETLOG_MAX_ATTEMPTS (the broker's max delivery attempts), ROCKETLOG_MAX_BODY_BYTES (the
// broker's max body size).
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// scenarios by name; each file of this package holds one.
var scenarios = map[string]func(*Scenario){
	"normal_and_tags": normalAndTags,
	"redelivery":      redelivery,
	"fifo":            fifo,
	"fifo_push":       fifoPush,
	"delay":           delay,
	"transaction":     transaction,
	"dlq":             dlq,
	"async_batch":     asyncBatchScenario,
	"bad_input":       badInput,
	"push_bulk":       pushBulk,
	"auth":            auth,
}

func usage() {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: %s <scenario> <host:port> <suffix>\nscenarios: %s\n",
		os.Args[0], strings.Join(names, " "))
	os.Exit(2)
}

func main() {
	if len(os.Args) != 4 {
		usage()
	}
	name, endpoint, suffix := os.Args[1], os.Args[2], os.Args[3]
	body, ok := scenarios[name]
	if !ok || !strings.Contains(endpoint, ":") || suffix == "" {
		usage()
	}
	newScenario(name, endpoint, suffix).Run(body)
}
