package main

// fifo_push: the FIFO PushConsumer: ordered consumption, local retries, the dead-letter queue.
//
// The topic fifopush-<suffix> is a FIFO topic and the broker's max delivery attempts small
// (ROCKETLOG_MAX_ATTEMPTS, 2 in the harness). The settings reply must tell the push consumer
// its group is FIFO (the client then creates its FIFO consume service, and logs so). The
// listener always fails one message of group 0: after the allowed attempts (the settings'
// retry policy's delay between them) the client calls ForwardMessageToDeadLetterQueue, the
// broker moves the message to %DLQ%<group> and releases the rest of group 0. Checked: each
// message group's listener calls follow send order exactly (the failing message repeated
// max-attempts times, nothing of its group in between, nothing delivered twice), the local
// retry waited the policy's first delay, and the failed message can be read from
// %DLQ%<group> with its id and body.

import (
	"fmt"
	"strings"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const (
	pushGroups   = 2
	pushPerGroup = 4
	// The first delay of the broker's consumer retry policy.
	firstRetryDelay = time.Second
)

// pushFail is the (message group, seq) the listener always fails.
var pushFail = [2]int{0, 1}

type pushCall struct {
	at     time.Time
	g, seq int
	msg    *rmq.MessageView
}

type recorder struct {
	mu    sync.Mutex
	calls []pushCall
}

func (r *recorder) consume(m *rmq.MessageView) rmq.ConsumerResult {
	g, seq := -1, -1
	parts := strings.Split(string(m.GetBody()), ":")
	if len(parts) >= 3 {
		fmt.Sscan(parts[1], &g)
		fmt.Sscan(parts[2], &seq)
	}
	r.mu.Lock()
	r.calls = append(r.calls, pushCall{time.Now(), g, seq, m})
	r.mu.Unlock()
	if [2]int{g, seq} == pushFail {
		return rmq.FAILURE
	}
	return rmq.SUCCESS
}

func (r *recorder) snapshot() []pushCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pushCall(nil), r.calls...)
}

func fifoPush(s *Scenario) {
	s.Check(s.maxAttempts >= 2 && s.maxAttempts <= 3,
		"ROCKETLOG_MAX_ATTEMPTS=%d: this scenario needs the broker set to 2 or 3 attempts", s.maxAttempts)
	topic := s.Unique("fifopush")
	group := s.Unique("grp-fifopush")
	names := make([]string, pushGroups)
	for g := range names {
		names[g] = s.Unique(fmt.Sprintf("pmg%d", g))
	}
	producer := s.Producer(nil, topic)
	ids := map[[2]int]string{}
	for seq := 0; seq < pushPerGroup; seq++ {
		for g := 0; g < pushGroups; g++ {
			body := fmt.Sprintf("fifopush:%d:%d:%s", g, seq, s.suffix)
			ids[[2]int{g, seq}] = s.Send(producer, Msg{Topic: topic, Body: []byte(body), Tag: "F", Group: names[g]}).MessageID
		}
	}
	s.Step("sent %d messages for each of %d message groups, interleaved", pushPerGroup, pushGroups)

	rec := &recorder{}
	s.PushConsumer(group, map[string]string{topic: "*"}, rec.consume)
	s.Check(len(s.ClientLogContaining("Create FIFO consume service")) > 0,
		"the settings reply did not mark the group FIFO (the client created its standard consume service); "+
			"a FIFO topic's consumer group must get subscription.fifo = true")
	s.Step("push consumer started; the settings reply says FIFO")

	want := map[int][]int{}
	total := 0
	for g := 0; g < pushGroups; g++ {
		for seq := 0; seq < pushPerGroup; seq++ {
			n := 1
			if [2]int{g, seq} == pushFail {
				n = s.maxAttempts
			}
			for i := 0; i < n; i++ {
				want[g] = append(want[g], seq)
			}
			total += n
		}
	}
	deadline := time.Now().Add(40 * time.Second)
	for len(rec.snapshot()) < total {
		calls := rec.snapshot()
		if time.Now().After(deadline) {
			var seen []string
			for _, c := range calls {
				seen = append(seen, fmt.Sprintf("%d:%d", c.g, c.seq))
			}
			s.Failf("after 40 s the listener saw %d/%d calls: %s", len(calls), total, strings.Join(seen, ", "))
		}
		time.Sleep(100 * time.Millisecond) // polling the listener's record
	}
	// Room for a wrong extra delivery to show.
	quietUntil := time.Now().Add(3 * time.Second)
	for time.Now().Before(quietUntil) {
		time.Sleep(100 * time.Millisecond)
	}
	calls := rec.snapshot()
	for g := 0; g < pushGroups; g++ {
		var got []int
		for _, c := range calls {
			if c.g == g {
				got = append(got, c.seq)
			}
		}
		s.Check(fmt.Sprint(got) == fmt.Sprint(want[g]), "message group %d: listener calls in order %v, want %v",
			g, got, want[g])
	}
	var failing []time.Time
	for _, c := range calls {
		s.Check(c.g >= 0 && c.g < pushGroups, "unexpected message: %s", Describe(c.msg))
		s.Check(c.msg.GetMessageId() == ids[[2]int{c.g, c.seq}], "group %d message %d: id %s, want %s", c.g, c.seq,
			c.msg.GetMessageId(), ids[[2]int{c.g, c.seq}])
		s.Check(deref(c.msg.GetMessageGroup()) == names[c.g], "group %d message %d: message group %q", c.g, c.seq,
			deref(c.msg.GetMessageGroup()))
		if [2]int{c.g, c.seq} == pushFail {
			failing = append(failing, c.at)
		}
	}
	s.Check(failing[1].Sub(failing[0]) >= firstRetryDelay-earlyTolerance,
		"the local retry came %v after the failure, before the %v delay of the settings' retry policy",
		failing[1].Sub(failing[0]), firstRetryDelay)
	s.Step("each message group consumed in order; the failing message tried %d times, then the group moved on",
		s.maxAttempts)

	dlqTopic := "%DLQ%" + group
	reader := s.SimpleConsumer(s.Unique("grp-fifopush-dlq"), map[string]string{dlqTopic: "*"})
	var dead *rmq.MessageView
	deadline = time.Now().Add(20 * time.Second)
	for dead == nil {
		s.Check(time.Now().Before(deadline), "the failed message did not show up in %s within 20 s", dlqTopic)
		for _, m := range s.ReceiveDefault(reader) {
			s.Check(m.GetMessageId() == ids[pushFail], "unexpected message in %s: %s", dlqTopic, Describe(m))
			dead = m
		}
	}
	wantBody := fmt.Sprintf("fifopush:%d:%d:%s", pushFail[0], pushFail[1], s.suffix)
	s.Check(string(dead.GetBody()) == wantBody, "dead-letter copy body %q, want %q", dead.GetBody(), wantBody)
	s.Ack(reader, dead)
	s.Step("the failed message was forwarded to %s", dlqTopic)
}
