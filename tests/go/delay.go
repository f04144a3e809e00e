package main

// delay: delayed messages (a delivery timestamp) arrive on time, never early.
//
// Sends DELAY messages due 1 s, 3 s and 6 s ahead (all at once) to a DELAY topic and checks
// that each becomes visible at its time, never before, with its delivery timestamp (to the
// millisecond) and properties, exactly once; lateness is printed per delay, never asserted
// (CI machines are loaded). Also: a delayed message to a NORMAL-only topic is refused (by the
// client's own check of the route's accepted message types), and a delivery time beyond the
// broker's maximum (40 days) is refused with *ErrRpcStatus ILLEGAL_DELIVERY_TIME (40012).
// v5.1.3 has no RecallMessage, so recall is not tried.
//
// The harness creates delay-<suffix> (DELAY) and plain-<suffix> (NORMAL).

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	v2 "github.com/apache/rocketmq-clients/golang/v5/protocol/v2"
)

var delays = []time.Duration{time.Second, 3 * time.Second, 6 * time.Second}

const (
	perDelay = 3
	// The consumer's host and the broker share a clock; allow for timestamp rounding only.
	earlySlack = 50 * time.Millisecond
)

type dueMessage struct {
	due   time.Time
	delay time.Duration
}

func delay(s *Scenario) {
	topic := s.Unique("delay")
	plain := s.Unique("plain")
	group := s.Unique("delay-group")
	producer := s.Producer(nil, topic, plain)
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	// The client logs every refused send and its retries.
	s.AllowClientErrors("failed to send message")

	expected := map[string]dueMessage{}
	now := time.Now()
	for _, d := range delays {
		for i := 0; i < perDelay; i++ {
			due := time.UnixMilli(now.Add(d).UnixMilli())
			receipt := s.Send(producer, Msg{Topic: topic, Body: []byte(fmt.Sprintf("delay %v #%d", d, i)),
				Tag: fmt.Sprintf("d%d", d/time.Second), Props: map[string]string{"delay": d.String()}, At: &due})
			expected[receipt.MessageID] = dueMessage{due, d}
		}
	}
	s.Step("sent %d delayed messages due at +%v", len(expected), delays)

	wrongAt := now.Add(5 * time.Second)
	wrong := Msg{Topic: plain, Body: []byte("delayed to a NORMAL topic"), At: &wrongAt}
	_, err := producer.Send(context.Background(), wrong.build())
	s.Check(err != nil, "a delayed message to the NORMAL-only topic %s was accepted", plain)
	text := errorText(err)
	s.Check(strings.Contains(text, "not match with topic accept message types") ||
		rpcCode(err) == int32(v2.Code_MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
		"a delayed message to a NORMAL-only topic: %s; want the client's message-type check or 40014", text)
	s.Step("delayed message to a NORMAL topic refused: %s", text)

	farAt := now.Add(41 * 24 * time.Hour)
	far := Msg{Topic: topic, Body: []byte("too far"), At: &farAt}
	_, err = producer.Send(context.Background(), far.build())
	s.Check(err != nil, "a delivery time 41 days ahead was accepted")
	s.Check(rpcCode(err) == int32(v2.Code_ILLEGAL_DELIVERY_TIME),
		"delivery time 41 days ahead: %s; want *ErrRpcStatus ILLEGAL_DELIVERY_TIME (40012)", errorText(err))
	s.Step("delivery time 41 days ahead refused: %s", errorText(err))

	lateness := map[time.Duration][]time.Duration{}
	seen := map[string]bool{}
	longest := delays[len(delays)-1]
	deadline := now.Add(longest + 15*time.Second)
	for len(seen) < len(expected) {
		if time.Now().After(deadline) {
			var missing []string
			for id := range expected {
				if !seen[id] {
					missing = append(missing, id)
				}
			}
			sort.Strings(missing)
			s.Failf("only %d of %d delayed messages arrived: missing %v", len(seen), len(expected), missing)
		}
		msgs := s.Receive(consumer, 16, s.invisible)
		arrived := time.Now()
		for _, m := range msgs {
			id := m.GetMessageId()
			want, ok := expected[id]
			s.Check(ok, "unexpected message %s", Describe(m))
			s.Check(!seen[id], "delivered twice: %s", Describe(m))
			late := arrived.Sub(want.due)
			s.Check(late >= -earlySlack, "arrived %v early: %s", -late, Describe(m))
			at := m.GetDeliveryTimestamp()
			s.Check(at != nil && at.UnixMilli() == want.due.UnixMilli(), "delivery timestamp %v, want %v: %s", at,
				want.due, Describe(m))
			s.Check(m.GetProperties()["delay"] == want.delay.String(), "lost properties: %s", Describe(m))
			s.Ack(consumer, m)
			seen[id] = true
			lateness[want.delay] = append(lateness[want.delay], late)
		}
	}
	for _, d := range delays {
		values := lateness[d]
		sort.Slice(values, func(i, j int) bool { return values[i] < values[j] })
		s.Step("delay %v: lateness min %d ms, max %d ms over %d messages", d, values[0].Milliseconds(),
			values[len(values)-1].Milliseconds(), len(values))
	}
	s.ExpectNothing(consumer, time.Second, "after every delayed message was acked")
}
