package main

// redelivery: redelivery after the invisible time, ChangeInvisibleDuration, bad receipt handles.
//
//  1. One message is received with the shortest invisible duration the broker allows
//     (ROCKETLOG_INVISIBLE_SECS) and not acked.
//  2. It must not come back before the invisible time ends, and must come back after it: same
//     id, body and properties, delivery attempt 2, a new receipt handle.
//  3. ChangeInvisibleDuration on it returns a new receipt handle (the client swaps it in); an
//     ack with that handle holds: the message never comes back.
//  4. ChangeInvisibleDuration with a receipt handle the broker never issued fails with
//     *ErrRpcStatus INVALID_RECEIPT_HANDLE (v5.1.3's Ack does not report status codes, so the
//     made-up handle is tried there).
//  5. A receive with a zero invisible duration fails with ILLEGAL_INVISIBLE_TIME.

import (
	"context"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	v2 "github.com/apache/rocketmq-clients/golang/v5/protocol/v2"
)

// earlyTolerance: the broker's clock and ours start the invisible time at slightly different
// moments within the receive call.
const earlyTolerance = 250 * time.Millisecond

func redelivery(s *Scenario) {
	topic := s.Unique("redelivery")
	group := s.Unique("grp-redelivery")
	producer := s.Producer(nil, topic)
	body := "redelivery-" + s.suffix
	props := map[string]string{"scenario": "redelivery"}
	mid := s.Send(producer, Msg{Topic: topic, Body: []byte(body), Tag: "R", Keys: []string{"key-" + s.suffix},
		Props: props}).MessageID
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})

	// 1. first delivery
	var first *rmq.MessageView
	var callStarted time.Time
	deadline := time.Now().Add(15 * time.Second)
	for first == nil {
		s.Check(time.Now().Before(deadline), "the message was not delivered within 15 s")
		callStarted = time.Now()
		msgs := s.ReceiveDefault(consumer)
		if len(msgs) > 0 {
			s.Check(len(msgs) == 1 && msgs[0].GetMessageId() == mid,
				"first receive: expected only the sent message %s, got %d message(s), first %s", mid, len(msgs),
				Describe(msgs[0]))
			first = msgs[0]
		}
	}
	s.Check(first.GetDeliveryAttempt() == 1, "first delivery has delivery attempt %d, want 1", first.GetDeliveryAttempt())
	s.Check(string(first.GetBody()) == body, "first delivery body %q, want %q", first.GetBody(), body)
	visibleAgain := callStarted.Add(s.invisible - earlyTolerance)
	s.Step("got the first delivery, not acking; it may come back %v after it was handed out", s.invisible)

	// 2. not before the invisible time, then again with attempt 2
	var second *rmq.MessageView
	deadline = time.Now().Add(s.invisible + 15*time.Second)
	for second == nil {
		s.Check(time.Now().Before(deadline), "the un-acked message did not come back within %v of its first delivery",
			s.invisible+15*time.Second)
		msgs := s.ReceiveDefault(consumer)
		gotAt := time.Now()
		for _, m := range msgs {
			s.Check(m.GetMessageId() == mid, "unexpected message: %s", Describe(m))
			s.Check(!gotAt.Before(visibleAgain), "the message came back %v before its invisible time of %v ended",
				visibleAgain.Add(earlyTolerance).Sub(gotAt), s.invisible)
			second = m
		}
	}
	s.Check(second.GetDeliveryAttempt() == 2, "redelivery has delivery attempt %d, want 2", second.GetDeliveryAttempt())
	s.Check(string(second.GetBody()) == body, "redelivery body %q, want %q", second.GetBody(), body)
	s.Check(sameMap(second.GetProperties(), props), "redelivery user properties %v, want %v", second.GetProperties(), props)
	s.Check(second.GetReceiptHandle() != first.GetReceiptHandle(),
		"the redelivery reused the first delivery's receipt handle (a handle is per delivery)")
	s.Step("redelivered with attempt 2 after the invisible time")

	// 3. change the invisible time (new handle), then ack with the new handle
	oldHandle := second.GetReceiptHandle()
	s.Must(consumer.ChangeInvisibleDuration(second, s.invisible), "ChangeInvisibleDuration")
	s.Check(second.GetReceiptHandle() != "" && second.GetReceiptHandle() != oldHandle,
		"ChangeInvisibleDuration did not return a new receipt handle (got %q, old %q)", second.GetReceiptHandle(), oldHandle)
	s.Step("ChangeInvisibleDuration returned a new receipt handle")
	s.Ack(consumer, second)
	ackedAt := time.Now()
	s.Step("acked with the new handle")
	s.ExpectNothing(consumer, time.Until(ackedAt.Add(s.invisible+time.Second)),
		"after the ack (the message was acked and must not come back)")

	// 4. a receipt handle the broker never issued
	s.AllowClientErrors("failed to change message invisible duration")
	fake := *second
	fake.ReceiptHandle = "not-a-receipt-handle-" + s.suffix
	err := consumer.ChangeInvisibleDuration(&fake, s.invisible)
	s.Check(err != nil, "ChangeInvisibleDuration with a made-up receipt handle succeeded; want INVALID_RECEIPT_HANDLE")
	s.Check(rpcCode(err) == int32(v2.Code_INVALID_RECEIPT_HANDLE),
		"ChangeInvisibleDuration with a made-up receipt handle failed with %s, want *ErrRpcStatus INVALID_RECEIPT_HANDLE (40013)",
		errorText(err))
	s.Step("made-up receipt handle rejected: %s", errorText(err))

	// 5. a zero invisible duration
	_, err = consumer.Receive(context.Background(), 1, 0)
	s.Check(err != nil, "receive with a zero invisible duration succeeded; want ILLEGAL_INVISIBLE_TIME")
	s.Check(rpcCode(err) == int32(v2.Code_ILLEGAL_INVISIBLE_TIME),
		"receive with a zero invisible duration failed with %s, want *ErrRpcStatus ILLEGAL_INVISIBLE_TIME (40011)",
		errorText(err))
	s.Step("receive with a zero invisible duration rejected: %s", errorText(err))
}
