package main

// fifo: per message group order, and nothing of a group while an earlier message is in flight.
//
// The topic fifo-<suffix> is a FIFO topic (made by the harness). A producer sends fifoPerGroup
// messages for each of fifoGroups message groups, interleaved. A SimpleConsumer then runs four
// phases, and every message it receives is checked against a model of what may be delivered:
// within a message group, messages arrive in send order without gaps; no message of a group
// arrives while an earlier one of that group is in flight (received, neither acked nor
// returned, invisible time not over); a redelivery repeats the same id with attempt + 1.
//
// Phases: (1) receive one at a time without acking until the broker has nothing more: every
// group's head is in flight and nothing else comes; (2) ack group 0's messages, receive one at
// a time again: only group 0 moves on; (3) nack group 1 (ChangeInvisibleDuration to the
// shortest invisible time): group 1 comes back from the same message, attempt 2, not before
// that time; (4) ack everything as it comes until all messages are consumed, then nothing more.

import (
	"fmt"
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const (
	fifoGroups   = 3
	fifoPerGroup = 4
	// Invisible time of held messages: nothing held expires during phases 1-3.
	fifoHold = 25 * time.Second
)

type heldMessage struct {
	msg   *rmq.MessageView
	until time.Time
}

type fifoModel struct {
	s          *Scenario
	names      []string
	ids        map[[2]int]string
	acked      [fifoGroups]int
	inflight   [fifoGroups][]heldMessage
	attempts   map[[2]int]int32
	returnedAt [fifoGroups]*time.Time
}

func (md *fifoModel) parse(m *rmq.MessageView) (int, int) {
	var g, seq int
	var rest string
	if n, _ := fmt.Sscanf(strings.ReplaceAll(string(m.GetBody()), ":", " "), "fifo %d %d %s", &g, &seq, &rest); n != 3 {
		md.s.Failf("unexpected message: %s", Describe(m))
	}
	md.s.Check(g >= 0 && g < fifoGroups && seq >= 0 && seq < fifoPerGroup, "unexpected message: %s", Describe(m))
	return g, seq
}

func (md *fifoModel) receive(c rmq.SimpleConsumer, invisible time.Duration, maxNum int32) []*rmq.MessageView {
	s := md.s
	started := time.Now()
	msgs := s.Receive(c, maxNum, invisible)
	arrived := time.Now()
	var inBatch [fifoGroups]int
	for _, m := range msgs {
		g, seq := md.parse(m)
		where := fmt.Sprintf("group %d message %d (%s)", g, seq, Describe(m))
		s.Check(deref(m.GetMessageGroup()) == md.names[g], "%s: message group %q, want %q", where,
			deref(m.GetMessageGroup()), md.names[g])
		s.Check(m.GetMessageId() == md.ids[[2]int{g, seq}], "%s: id %s, want %s", where, m.GetMessageId(),
			md.ids[[2]int{g, seq}])
		if inBatch[g] == 0 && len(md.inflight[g]) > 0 {
			holding := md.inflight[g][0].until
			for _, h := range md.inflight[g] {
				if h.until.Before(holding) {
					holding = h.until
				}
			}
			if arrived.Before(holding) {
				var held []string
				for _, h := range md.inflight[g] {
					_, hs := md.parse(h.msg)
					held = append(held, fmt.Sprint(hs))
				}
				s.Failf("%s was delivered while message(s) %s of the same group were in flight "+
					"(invisible for %v more)", where, strings.Join(held, ", "), holding.Sub(arrived))
			}
			// Everything held of this group timed out: the group starts over at its head.
			md.inflight[g] = nil
		}
		expected := md.acked[g] + inBatch[g]
		s.Check(seq == expected, "%s arrived out of order: the next message of group %d is %d", where, g, expected)
		previous, seen := md.attempts[[2]int{g, seq}]
		want := int32(1)
		if seen {
			want = previous + 1
		}
		s.Check(m.GetDeliveryAttempt() == want, "%s: delivery attempt %d, want %d", where, m.GetDeliveryAttempt(), want)
		if seen && md.returnedAt[g] != nil {
			s.Check(!arrived.Before(md.returnedAt[g].Add(-earlyTolerance)),
				"%s came back %v before the invisible time set by ChangeInvisibleDuration ended", where,
				md.returnedAt[g].Sub(arrived))
		}
		md.attempts[[2]int{g, seq}] = m.GetDeliveryAttempt()
		md.inflight[g] = append(md.inflight[g], heldMessage{m, started.Add(invisible)})
		inBatch[g]++
	}
	for g := range inBatch {
		if inBatch[g] > 0 {
			md.returnedAt[g] = nil
		}
	}
	return msgs
}

func (md *fifoModel) receiveUntilEmpty(c rmq.SimpleConsumer, invisible, within time.Duration, maxNum int32) {
	deadline := time.Now().Add(within)
	for len(md.receive(c, invisible, maxNum)) > 0 {
		md.s.Check(time.Now().Before(deadline), "the broker kept delivering for %v; it should have run dry", within)
	}
}

func (md *fifoModel) ackGroup(c rmq.SimpleConsumer, g int) {
	for _, h := range md.inflight[g] {
		md.s.Ack(c, h.msg)
		md.acked[g]++
	}
	md.inflight[g] = nil
}

func (md *fifoModel) nackGroup(c rmq.SimpleConsumer, g int, d time.Duration) {
	at := time.Now().Add(d)
	md.returnedAt[g] = &at
	for _, h := range md.inflight[g] {
		md.s.Must(c.ChangeInvisibleDuration(h.msg, d), "ChangeInvisibleDuration (nack)")
	}
	md.inflight[g] = nil
}

func (md *fifoModel) checkHeadsInFlight(groups []int, phase string) {
	for _, g := range groups {
		if md.acked[g] < fifoPerGroup {
			md.s.Check(len(md.inflight[g]) > 0, "%s: group %d has message %d ready, but receive came back empty "+
				"without delivering it", phase, g, md.acked[g])
		}
	}
}

func (md *fifoModel) done() bool {
	for _, a := range md.acked {
		if a < fifoPerGroup {
			return false
		}
	}
	return true
}

func fifo(s *Scenario) {
	topic := s.Unique("fifo")
	group := s.Unique("grp-fifo")
	names := make([]string, fifoGroups)
	for g := range names {
		names[g] = s.Unique(fmt.Sprintf("mg%d", g))
	}
	producer := s.Producer(nil, topic)
	ids := map[[2]int]string{}
	for seq := 0; seq < fifoPerGroup; seq++ {
		for g := 0; g < fifoGroups; g++ {
			body := fmt.Sprintf("fifo:%d:%d:%s", g, seq, s.suffix)
			ids[[2]int{g, seq}] = s.Send(producer, Msg{Topic: topic, Body: []byte(body), Tag: "F", Group: names[g]}).MessageID
		}
	}
	s.Step("sent %d messages for each of %d message groups, interleaved", fifoPerGroup, fifoGroups)

	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	md := &fifoModel{s: s, names: names, ids: ids, attempts: map[[2]int]int32{}}

	s.Step("phase 1: receive one at a time without acking until nothing more comes")
	md.receiveUntilEmpty(consumer, fifoHold, 15*time.Second, 1)
	md.checkHeadsInFlight([]int{0, 1, 2}, "phase 1")

	s.Step("phase 2: ack group 0 only; only group 0 may move on")
	md.ackGroup(consumer, 0)
	md.receiveUntilEmpty(consumer, fifoHold, 15*time.Second, 1)
	md.checkHeadsInFlight([]int{0}, "phase 2")

	s.Step("phase 3: nack group 1 for %v; it must restart from the same message", s.invisible)
	head := md.acked[1]
	md.nackGroup(consumer, 1, s.invisible)
	deadline := time.Now().Add(s.invisible + 15*time.Second)
	for len(md.inflight[1]) == 0 {
		s.Check(time.Now().Before(deadline), "group 1 message %d did not come back within %v of its nack", head,
			s.invisible+15*time.Second)
		md.receive(consumer, fifoHold, 32)
	}
	s.Check(md.attempts[[2]int{1, head}] == 2, "group 1 message %d came back with attempt %d, want 2", head,
		md.attempts[[2]int{1, head}])

	s.Step("phase 4: ack everything as it comes")
	deadline = time.Now().Add(25 * time.Second)
	for !md.done() {
		s.Check(time.Now().Before(deadline), "not all messages consumed within 25 s; acked per group: %v", md.acked)
		for g := 0; g < fifoGroups; g++ {
			md.ackGroup(consumer, g)
		}
		if md.done() {
			break
		}
		md.receive(consumer, fifoHold, 32)
	}
	s.Step("all %d messages consumed in order", fifoGroups*fifoPerGroup)
	s.ExpectNothing(consumer, 0, "after every message was acked")
}
