package main

// push_bulk: a PushConsumer with the client's default settings consumes 10,000 messages
// without loss.
//
// The consumer starts first; the producer then sends bulkN messages with SendAsync, at most
// bulkInFlight at a time. Every send must succeed with a distinct id, and the listener must see
// every one of those ids (counted by distinct message id) within the time limit, and no id that
// was never sent. Redeliveries are counted and printed (at-least-once allows them).

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const (
	bulkN         = 10_000
	bulkInFlight  = 256
	bulkSendLimit = 60 * time.Second
	bulkConsume   = 90 * time.Second
	bulkProgress  = 5 * time.Second
)

type idSet struct {
	mu  sync.Mutex
	ids map[string]int
}

func (c *idSet) add(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids[id]++
	return c.ids[id]
}

func (c *idSet) copy() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.ids))
	for k, v := range c.ids {
		out[k] = v
	}
	return out
}

func pushBulk(s *Scenario) {
	topic := s.Unique("bulk")
	group := s.Unique("grp-bulk")
	producer := s.Producer(nil, topic)
	consumed := &idSet{ids: map[string]int{}}
	var calls atomic.Int64
	s.PushConsumer(group, map[string]string{topic: "*"}, func(m *rmq.MessageView) rmq.ConsumerResult {
		consumed.add(m.GetMessageId())
		calls.Add(1)
		return rmq.SUCCESS
	})
	s.Step("push consumer started with the default settings")

	sendStarted := time.Now()
	sent := &idSet{ids: map[string]int{}}
	var sendErrors sync.Map
	var errorCount atomic.Int64
	window := make(chan struct{}, bulkInFlight)
	sendDeadline := time.Now().Add(bulkSendLimit)
	for i := 0; i < bulkN; i++ {
		select {
		case window <- struct{}{}:
		case <-time.After(time.Until(sendDeadline)):
			s.Failf("sends not done within %v (%d of %d acknowledged)", bulkSendLimit, len(sent.copy()), bulkN)
		}
		m := Msg{Topic: topic, Body: []byte(fmt.Sprintf("bulk-%d-%s", i, s.suffix)), Tag: "bulk"}
		producer.SendAsync(context.Background(), m.build(), func(_ context.Context, r []*rmq.SendReceipt, err error) {
			defer func() { <-window }()
			switch {
			case err != nil:
				sendErrors.Store(errorCount.Add(1), errorText(err))
			case len(r) != 1 || r[0].MessageID == "":
				sendErrors.Store(errorCount.Add(1), fmt.Sprintf("%d receipts", len(r)))
			case sent.add(r[0].MessageID) > 1:
				sendErrors.Store(errorCount.Add(1), "duplicate message id "+r[0].MessageID+" in two receipts")
			}
		})
	}
	for i := 0; i < bulkInFlight; i++ {
		select {
		case window <- struct{}{}:
		case <-time.After(time.Until(sendDeadline)):
			s.Failf("the last sends did not complete within %v", bulkSendLimit)
		}
	}
	if n := errorCount.Load(); n > 0 {
		first, _ := sendErrors.Load(int64(1))
		s.Failf("%d send(s) failed, first: %v", n, first)
	}
	sentIDs := sent.copy()
	s.Check(len(sentIDs) == bulkN, "%d sends produced %d distinct message ids", bulkN, len(sentIDs))
	sendSecs := time.Since(sendStarted).Seconds()
	s.Step("%d messages sent in %.1fs (%.0f msg/s, %d in flight)", bulkN, sendSecs, bulkN/sendSecs, bulkInFlight)

	deadline := time.Now().Add(bulkConsume)
	nextProgress := time.Now().Add(bulkProgress)
	for {
		got := consumed.copy()
		missing := 0
		for id := range sentIDs {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		s.Check(time.Now().Before(deadline), "%d of %d messages not consumed within %v of the last send "+
			"(listener calls: %d)", missing, bulkN, bulkConsume, calls.Load())
		if time.Now().After(nextProgress) {
			s.Step("%d of %d distinct messages consumed (%d listener calls)", bulkN-missing, bulkN, calls.Load())
			nextProgress = nextProgress.Add(bulkProgress)
		}
		time.Sleep(50 * time.Millisecond) // polling the listener's record
	}
	totalSecs := time.Since(sendStarted).Seconds()
	got := consumed.copy()
	redelivered := 0
	for id, n := range got {
		s.Check(sentIDs[id] > 0, "the listener got a message never sent: %s", id)
		if n > 1 {
			redelivered++
		}
	}
	s.Step("all %d messages consumed %.1fs after the first send (%.0f msg/s); %d listener calls, "+
		"%d message(s) delivered more than once", bulkN, totalSecs, bulkN/totalSecs, calls.Load(), redelivered)
}
