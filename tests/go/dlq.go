package main

// dlq: a message never acked goes to %DLQ%<group> after the max attempts.
//
// The broker uses a small max delivery attempts (ROCKETLOG_MAX_ATTEMPTS, set alike for the
// broker and the scenario) and a short invisible time.
//
//  1. One message is received max-attempts times without an ack; each delivery comes after
//     the previous one's invisible time with delivery attempt 1, 2, ... max.
//  2. The group never gets it again (no attempt above the max).
//  3. A SimpleConsumer of another group on %DLQ%<group> receives it: same id, body, tag, keys
//     and user properties; acking it holds.

import (
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

func dlq(s *Scenario) {
	s.Check(s.maxAttempts >= 1 && s.maxAttempts <= 5,
		"ROCKETLOG_MAX_ATTEMPTS=%d: this scenario needs the broker set to 1..5 attempts", s.maxAttempts)
	topic := s.Unique("dlq")
	group := s.Unique("grp-dlq")
	dlqTopic := "%DLQ%" + group
	producer := s.Producer(nil, topic)
	body := "dead-letter-" + s.suffix
	props := map[string]string{"scenario": "dlq"}
	key := "key-" + s.suffix
	mid := s.Send(producer, Msg{Topic: topic, Body: []byte(body), Tag: "D", Keys: []string{key}, Props: props}).MessageID
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})

	// 1. max-attempts deliveries, none acked
	var visibleFrom time.Time
	for attempt := 1; attempt <= s.maxAttempts; attempt++ {
		deadline := time.Now().Add(s.invisible + 15*time.Second)
		var got *rmq.MessageView
		var started time.Time
		for got == nil {
			s.Check(time.Now().Before(deadline), "delivery %d did not come within %v", attempt, s.invisible+15*time.Second)
			started = time.Now()
			for _, m := range s.ReceiveDefault(consumer) {
				s.Check(m.GetMessageId() == mid, "unexpected message: %s", Describe(m))
				s.Check(!time.Now().Before(visibleFrom),
					"delivery %d came before the previous delivery's invisible time ended", attempt)
				got = m
			}
		}
		s.Check(int(got.GetDeliveryAttempt()) == attempt, "delivery %d has delivery attempt %d", attempt,
			got.GetDeliveryAttempt())
		visibleFrom = started.Add(s.invisible - earlyTolerance)
		s.Step("delivery %d/%d received, not acking", attempt, s.maxAttempts)
	}

	// 2 + 3. the group never sees it again; the DLQ consumer gets it
	reader := s.SimpleConsumer(s.Unique("grp-dlq-reader"), map[string]string{dlqTopic: "*"})
	deadline := time.Now().Add(s.invisible + 25*time.Second)
	var dead *rmq.MessageView
	var batch []*rmq.MessageView
	for dead == nil {
		s.Check(time.Now().Before(deadline), "the message did not reach %s within %v after its last delivery",
			dlqTopic, s.invisible+25*time.Second)
		again := s.ReceiveDefault(consumer)
		if len(again) > 0 {
			descs := make([]string, len(again))
			for i, m := range again {
				descs[i] = Describe(m)
			}
			s.Failf("%s got the message again after its %d allowed attempts: %s", group, s.maxAttempts,
				strings.Join(descs, "; "))
		}
		batch = s.ReceiveDefault(reader)
		for _, m := range batch {
			s.Check(m.GetMessageId() == mid, "unexpected message in %s: %s", dlqTopic, Describe(m))
			dead = m
		}
	}
	s.Check(len(batch) == 1, "%s delivered the message %d times in one batch", dlqTopic, len(batch))
	s.Check(dead.GetTopic() == dlqTopic, "dead-letter copy says topic %q, want %q", dead.GetTopic(), dlqTopic)
	s.Check(string(dead.GetBody()) == body, "dead-letter copy body %q, want %q", dead.GetBody(), body)
	s.Check(deref(dead.GetTag()) == "D", "dead-letter copy tag %q, want D", deref(dead.GetTag()))
	s.Check(sameSet(dead.GetKeys(), []string{key}), "dead-letter copy keys %v, want [%s]", dead.GetKeys(), key)
	s.Check(sameMap(dead.GetProperties(), props), "dead-letter copy user properties %v, want exactly %v",
		dead.GetProperties(), props)
	s.Step("dead-letter copy received from %s", dlqTopic)
	s.Ack(reader, dead)
	ackedAt := time.Now()
	s.ExpectNothing(reader, time.Until(ackedAt.Add(s.invisible+time.Second)), "from "+dlqTopic+" after the ack")
	s.ExpectNothing(consumer, 0, "for "+group+" after the message was dead-lettered")
}
