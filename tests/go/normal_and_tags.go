package main

// normal_and_tags: normal messages with tags, keys and user properties; tag filters per group.
//
// A producer sends N messages tagged A and B alternately, each with one or two keys and two or
// three user properties (some with non-ASCII values). Independent consumer groups then read the
// topic: filter `A` gets exactly the A messages, each intact (body, tag, keys, properties,
// first delivery attempt, no message group, born timestamp of the send), acked, and nothing
// more, not even after the invisible time (so the acks held); filter `*` all N; filter `B||C`
// exactly the B messages.

import (
	"fmt"
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const normalN = 10

type sentNormal struct {
	index int
	msg   Msg
}

func normalAndTags(s *Scenario) {
	topic := s.Unique("normal")
	producer := s.Producer(nil, topic)
	sentAt := time.Now()
	sent := map[string]sentNormal{}
	for i := 0; i < normalN; i++ {
		tag := "A"
		if i%2 == 1 {
			tag = "B"
		}
		keys := []string{fmt.Sprintf("key-%d-%s", i, s.suffix)}
		if i%3 == 0 {
			keys = append(keys, fmt.Sprintf("second-key-%d", i))
		}
		props := map[string]string{"index": fmt.Sprint(i), "scenario": "normal_and_tags"}
		if i%4 == 0 {
			props["unicode"] = "值-ü-\u00e9-🚀"
		}
		m := Msg{Topic: topic, Body: []byte(fmt.Sprintf("normal-%d-%s", i, s.suffix)), Tag: tag,
			Keys: keys, Props: props}
		receipt := s.Send(producer, m)
		_, dup := sent[receipt.MessageID]
		s.Check(!dup, "two sends returned the same message id %s", receipt.MessageID)
		sent[receipt.MessageID] = sentNormal{i, m}
	}
	s.Step("sent %d messages to %s", normalN, topic)
	withTag := func(tags ...string) map[string]bool {
		ids := map[string]bool{}
		for id, v := range sent {
			for _, t := range tags {
				if v.msg.Tag == t {
					ids[id] = true
				}
			}
		}
		return ids
	}
	consumeExactly(s, s.Unique("grp-a"), topic, "A", withTag("A"), sent, sentAt)
	consumeExactly(s, s.Unique("grp-all"), topic, "*", withTag("A", "B"), sent, sentAt)
	consumeExactly(s, s.Unique("grp-bc"), topic, "B||C", withTag("B"), sent, sentAt)
}

func verifyNormal(s *Scenario, m *rmq.MessageView, topic string, want sentNormal, sentAt time.Time) {
	where := fmt.Sprintf("message %d (%s)", want.index, m.GetMessageId())
	s.Check(m.GetTopic() == topic, "%s: topic %q, want %q", where, m.GetTopic(), topic)
	s.Check(string(m.GetBody()) == string(want.msg.Body), "%s: body %q, want %q", where, m.GetBody(), want.msg.Body)
	s.Check(m.GetTag() != nil && *m.GetTag() == want.msg.Tag, "%s: tag %v, want %q", where, m.GetTag(), want.msg.Tag)
	s.Check(sameSet(m.GetKeys(), want.msg.Keys), "%s: keys %v, want %v", where, m.GetKeys(), want.msg.Keys)
	s.Check(sameMap(m.GetProperties(), want.msg.Props),
		"%s: user properties %v, want exactly %v (broker-internal properties must not leak to users)",
		where, m.GetProperties(), want.msg.Props)
	s.Check(m.GetDeliveryAttempt() == 1, "%s: delivery attempt %d, want 1", where, m.GetDeliveryAttempt())
	s.Check(m.GetMessageGroup() == nil, "%s: message group %q on a normal message", where, deref(m.GetMessageGroup()))
	born := m.GetBornTimestamp()
	s.Check(born != nil && !born.Before(sentAt.Add(-2*time.Second)) && !born.After(time.Now().Add(time.Second)),
		"%s: born timestamp %v is not the send time (~%v)", where, born, sentAt)
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// consumeExactly receives exactly the messages want (ids) with filter expression, acking each,
// then checks that nothing comes back once the invisible time has passed.
func consumeExactly(s *Scenario, group, topic, expression string, want map[string]bool,
	sent map[string]sentNormal, sentAt time.Time) {
	consumer := s.SimpleConsumer(group, map[string]string{topic: expression})
	pending := map[string]bool{}
	for id := range want {
		pending[id] = true
	}
	deadline := time.Now().Add(20 * time.Second)
	lastAck := time.Now()
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			var missing []string
			for id := range pending {
				missing = append(missing, fmt.Sprint(sent[id].index))
			}
			s.Failf("group %s (filter %q) still misses %d message(s) after 20 s: %s", group, expression,
				len(pending), strings.Join(missing, ", "))
		}
		for _, m := range s.ReceiveDefault(consumer) {
			id := m.GetMessageId()
			v, known := sent[id]
			s.Check(known, "group %s got a message never sent: %s", group, Describe(m))
			s.Check(want[id], "group %s with filter %q got message %d tagged %q: %s", group, expression,
				v.index, v.msg.Tag, Describe(m))
			s.Check(pending[id], "group %s got message %d twice before the invisible time ran out: %s",
				group, v.index, Describe(m))
			verifyNormal(s, m, topic, v, sentAt)
			s.Ack(consumer, m)
			lastAck = time.Now()
			delete(pending, id)
		}
	}
	s.Step("group %s (filter %q) received and acked all %d expected messages", group, expression, len(want))
	// Had an ack not held, its message would come back once the invisible time passed.
	s.ExpectNothing(consumer, time.Until(lastAck.Add(s.invisible+time.Second)),
		"for group "+group+" after acking everything it should get")
	s.Forget(consumer)
}
