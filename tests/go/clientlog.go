package main

// The client's own log file: what a scenario checks in it and shows of it on failure.

import (
	"fmt"
	"os"
	"strings"
)

// clientLogShown bounds how much of the client's log a failure prints.
const clientLogShown = 300

// ClientLogLines are the lines of the client's log (nil if it wrote none yet).
func (s *Scenario) ClientLogLines() []string {
	raw, err := os.ReadFile(s.logFile)
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
}

// ClientLogContaining are the client's log lines that contain fragment.
func (s *Scenario) ClientLogContaining(fragment string) []string {
	var found []string
	for _, line := range s.ClientLogLines() {
		if strings.Contains(line, fragment) {
			found = append(found, line)
		}
	}
	return found
}

// logLevel is the level column of a line of the client's console-encoded zap log
// (time, level, caller, message, fields; tab-separated).
func logLevel(line string) string {
	fields := strings.SplitN(line, "\t", 3)
	if len(fields) < 2 {
		return ""
	}
	return fields[1]
}

// logMessage is the message column of a line of the client's log.
func logMessage(line string) string {
	fields := strings.SplitN(line, "\t", 5)
	if len(fields) < 4 {
		return line
	}
	return fields[3]
}

func serious(line string) bool {
	switch logLevel(line) {
	case "WARN", "ERROR", "DPANIC", "PANIC", "FATAL":
		return true
	}
	return false
}

// unexpectedClientErrors are the warnings and errors the client logged that neither the
// scenario nor the list of the client's known noise expects: failed heartbeats, settings,
// telemetry, a push consumer's acks and the like, which the application never sees.
func (s *Scenario) unexpectedClientErrors() []string {
	s.mu.Lock()
	allowed := append([]string(nil), s.allowed...)
	s.mu.Unlock()
	var found []string
	for _, line := range s.ClientLogLines() {
		if !serious(line) {
			continue
		}
		expected := false
		for _, a := range allowed {
			if strings.Contains(line, a) {
				expected = true
				break
			}
		}
		if !expected {
			found = append(found, line)
		}
	}
	return found
}

// dumpClientLog prints the client's log to stderr: all of it if short, else its warnings and
// errors and its last lines.
func (s *Scenario) dumpClientLog() {
	lines := s.ClientLogLines()
	fmt.Fprintf(os.Stderr, "----- client log %s (%d lines) -----\n", s.logFile, len(lines))
	if len(lines) <= clientLogShown {
		for _, l := range lines {
			fmt.Fprintln(os.Stderr, l)
		}
		return
	}
	var bad []string
	for _, l := range lines {
		if serious(l) {
			bad = append(bad, l)
		}
	}
	if len(bad) > clientLogShown/2 {
		bad = bad[len(bad)-clientLogShown/2:]
	}
	fmt.Fprintf(os.Stderr, "--- the last %d warnings and errors ---\n", len(bad))
	for _, l := range bad {
		fmt.Fprintln(os.Stderr, l)
	}
	tail := lines[len(lines)-clientLogShown/2:]
	fmt.Fprintf(os.Stderr, "--- the last %d lines ---\n", len(tail))
	for _, l := range tail {
		fmt.Fprintln(os.Stderr, l)
	}
}
