package main

// async_batch: many concurrent SendAsync calls, and batched receives that respect the batch size.
//
// The producer sends asyncN messages with SendAsync (all SendMessage calls in flight at once);
// every callback must carry one receipt with a distinct message id. A SimpleConsumer then
// receives with a small maxMessageNum: no batch is larger, every message arrives exactly once
// and intact, acks hold, and nothing more comes.

import (
	"context"
	"fmt"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const (
	asyncN     = 40
	asyncBatch = 8
	sendWait   = 15 * time.Second
)

type asyncResult struct {
	body     string
	receipts []*rmq.SendReceipt
	err      error
}

func asyncBatchScenario(s *Scenario) {
	topic := s.Unique("async")
	group := s.Unique("grp-async")
	producer := s.Producer(nil, topic)
	results := make(chan asyncResult, asyncN)
	for i := 0; i < asyncN; i++ {
		body := fmt.Sprintf("async-%d-%s", i, s.suffix)
		m := Msg{Topic: topic, Body: []byte(body), Tag: "X", Keys: []string{fmt.Sprintf("k%d", i)}}
		producer.SendAsync(context.Background(), m.build(), func(_ context.Context, r []*rmq.SendReceipt, err error) {
			results <- asyncResult{body, r, err}
		})
	}
	bodies := map[string]string{}
	timeout := time.After(sendWait)
	for i := 0; i < asyncN; i++ {
		select {
		case r := <-results:
			s.Must(r.err, "async send of "+r.body)
			id := s.oneReceipt(r.receipts, topic).MessageID
			_, dup := bodies[id]
			s.Check(!dup, "two async sends returned the same message id %s", id)
			bodies[id] = r.body
		case <-timeout:
			s.Failf("only %d of %d async sends completed within %v", i, asyncN, sendWait)
		}
	}
	s.Step("%d concurrent sends acknowledged", asyncN)

	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	left := map[string]bool{}
	for id := range bodies {
		left[id] = true
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	lastAck := time.Now()
	for len(left) > 0 {
		s.Check(time.Now().Before(deadline), "%d of %d messages not received within 30 s", len(left), asyncN)
		for _, m := range s.Receive(consumer, asyncBatch, s.invisible) {
			id := m.GetMessageId()
			body, ok := bodies[id]
			s.Check(ok, "unexpected message: %s", Describe(m))
			s.Check(!seen[id], "message delivered twice: %s", Describe(m))
			s.Check(string(m.GetBody()) == body, "body mismatch: %s", Describe(m))
			seen[id] = true
			s.Ack(consumer, m)
			lastAck = time.Now()
			delete(left, id)
		}
	}
	s.Step("received all %d messages in batches of at most %d", asyncN, asyncBatch)
	s.ExpectNothing(consumer, time.Until(lastAck.Add(s.invisible+time.Second)), "after every message was acked")
}
