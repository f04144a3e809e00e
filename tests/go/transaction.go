package main

// transaction: commit, rollback and the broker's check-back through the transaction checker.
//
// The broker is tuned (tests/tests/go_compat.rs) to check an open transaction 4 s after its
// half message was stored, then every 1 s.
//
//  1. A transaction committed by the producer is delivered once; one rolled back never is; a
//     half message is invisible until its commit.
//  2. A transaction left open is checked back over the producer's Telemetry stream: the
//     checker answers UNKNOWN first (the client then sends EndTransaction with an unspecified
//     resolution), so the broker asks again; the second answer is COMMIT and the message is
//     delivered once. Transactions the producer resolved itself are never checked.
//  3. Committing the committed transaction again changes nothing (no error, no second
//     delivery); committing the rolled-back one is refused with INVALID_TRANSACTION_ID.
//     v5.1.3's Commit and RollBack always return nil and log a refusal instead, so the client's
//     log is where the code is checked.
//  4. A topic that does not accept TRANSACTION messages is refused (its route says so).
//
// In the end exactly the committed messages were consumed, each once.

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

// commitFailed is what v5.1.3 logs when the broker refuses a commit.
const (
	commitFailed   = "transaction message commit failed"
	rollbackFailed = "transaction message rollback failed"
)

type txChecker struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *txChecker) check(m *rmq.MessageView) rmq.TransactionResolution {
	body := string(m.GetBody())
	c.mu.Lock()
	c.calls[body]++
	n := c.calls[body]
	c.mu.Unlock()
	fmt.Printf("           checker called for %q (call %d), topic=%s id=%s\n", body, n, m.GetTopic(), m.GetMessageId())
	if n == 1 {
		return rmq.UNKNOWN
	}
	return rmq.COMMIT
}

func (c *txChecker) count(body string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[body]
}

func (c *txChecker) snapshot() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.calls))
	for k := range c.calls {
		keys = append(keys, fmt.Sprintf("%s:%d", k, c.calls[k]))
	}
	sort.Strings(keys)
	return "{" + strings.Join(keys, ", ") + "}"
}

func sendHalf(s *Scenario, p rmq.Producer, topic, body string) (rmq.Transaction, *rmq.SendReceipt, error) {
	tx := p.BeginTransaction()
	m := Msg{Topic: topic, Body: []byte(body), Tag: "tx", Keys: []string{body + "-key"},
		Props: map[string]string{"kind": body}}
	receipts, err := p.SendWithTransaction(context.Background(), m.build(), tx)
	if err != nil {
		return nil, nil, err
	}
	r := s.oneReceipt(receipts, topic)
	s.Check(r.TransactionId != "", "no transaction id for %s", body)
	return tx, r, nil
}

func transaction(s *Scenario) {
	topic := s.Unique("tx")
	normal := s.Unique("txnormal")
	group := s.Unique("grp-tx")
	checker := &txChecker{calls: map[string]int{}}
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	producer := s.Producer(&rmq.TransactionChecker{Check: checker.check}, topic, normal)

	// 1. commit and rollback by the producer
	tx1, r1, err := sendHalf(s, producer, topic, "committed")
	s.Must(err, "half message \"committed\"")
	tx2, r2, err := sendHalf(s, producer, topic, "rolled-back")
	s.Must(err, "half message \"rolled-back\"")
	s.Step("sent two half messages: %s (tx %s), %s (tx %s)", r1.MessageID, r1.TransactionId, r2.MessageID,
		r2.TransactionId)
	s.ExpectNothing(consumer, 100*time.Millisecond, "before any commit (half messages are hidden)")
	s.Must(tx1.Commit(), "commit")
	s.Must(tx2.RollBack(), "rollback")
	refused := append(s.ClientLogContaining(commitFailed), s.ClientLogContaining(rollbackFailed)...)
	s.Check(len(refused) == 0, "the broker refused a commit or rollback: %v", refused)
	s.Step("committed the first, rolled back the second")

	// 2. one left open for the checker
	_, r3, err := sendHalf(s, producer, topic, "checked")
	s.Must(err, "half message \"checked\"")
	s.Step("left %s (tx %s) open for the broker to check", r3.MessageID, r3.TransactionId)

	want := map[string]string{r1.MessageID: "committed", r3.MessageID: "checked"}
	got := map[string]bool{}
	deadline := time.Now().Add(40 * time.Second)
	for len(got) < len(want) {
		s.Check(time.Now().Before(deadline), "committed messages not all delivered within 40 s: got %v, want %v; "+
			"checker calls %s", got, want, checker.snapshot())
		for _, m := range s.ReceiveDefault(consumer) {
			id := m.GetMessageId()
			body, ok := want[id]
			s.Check(ok, "delivered a message that was not committed: %s", Describe(m))
			s.Check(!got[id], "delivered %s twice", id)
			s.Check(string(m.GetBody()) == body, "wrong body: %s", Describe(m))
			s.Check(m.GetTopic() == topic, "delivered on topic %s, want %s", m.GetTopic(), topic)
			s.Check(deref(m.GetTag()) == "tx" && m.GetProperties()["kind"] == body, "tag or properties lost: %s",
				Describe(m))
			got[id] = true
			s.Ack(consumer, m)
		}
	}
	s.Step("both committed messages delivered once")
	s.Check(checker.count("checked") == 2, "the open transaction was checked %d times; want 2 (UNKNOWN, then "+
		"COMMIT): %s", checker.count("checked"), checker.snapshot())
	s.Check(checker.count("committed") == 0 && checker.count("rolled-back") == 0,
		"the broker checked a transaction the producer had resolved: %s", checker.snapshot())

	// 3. resolving again
	s.Must(tx1.Commit(), "commit again")
	s.Check(len(s.ClientLogContaining(commitFailed)) == 0, "committing the committed transaction again was "+
		"refused: %v", s.ClientLogContaining(commitFailed))
	s.Step("committing the committed transaction again was answered OK")
	s.AllowClientErrors(commitFailed)
	s.Must(tx2.Commit(), "commit after rollback")
	refusals := s.ClientLogContaining(commitFailed)
	s.Check(len(refusals) == 1, "committing the rolled-back transaction: the client logged %d refusals, want 1: %v",
		len(refusals), refusals)
	s.Check(strings.Contains(refusals[0], "40008") || strings.Contains(refusals[0], "INVALID_TRANSACTION_ID"),
		"committing the rolled-back transaction was refused, but not with INVALID_TRANSACTION_ID (40008): %s",
		refusals[0])
	s.Step("committing the rolled-back transaction was refused; the client logged: %s", logMessage(refusals[0]))

	// 4. a NORMAL-only topic
	_, _, err = sendHalf(s, producer, normal, "wrong-topic")
	s.Check(err != nil, "a NORMAL-only topic accepted a transactional message")
	s.Check(strings.Contains(err.Error(), "message types"), "unexpected refusal: %s", errorText(err))
	s.Step("a NORMAL-only topic refused the transactional message: %v", err)

	s.ExpectNothing(consumer, 3*time.Second, "after the committed messages (no second delivery, no rolled-back one)")
	s.Check(checker.count("checked") == 2, "the committed transaction was checked again: %s", checker.snapshot())
}
