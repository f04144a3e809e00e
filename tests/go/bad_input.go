package main

// bad_input: bad input is refused with the client's documented errors, and the broker serves on.
//
//  1. Topic names the broker refuses (128 characters, the limit being 127; a name with
//     characters outside [%a-zA-Z0-9_-]; v5.1.3 checks neither itself): the send fails with
//     *ErrRpcStatus ILLEGAL_TOPIC (40002), from the route query.
//  2. A body one byte over the broker's max body size: the client refuses it itself, having
//     learnt the limit from the settings reply ("message body size exceeds the threshold,
//     max size=<limit> bytes").
//  3. The same body sent straight to SendMessage (the client's generated gRPC stub, over TLS as
//     the client dials, bypassing its check): the broker answers MESSAGE_BODY_TOO_LARGE (41301),
//     which the client's send turns into *ErrRpcStatus with that code.
//  4. A large body, a body holding every byte value and control messages sent before and after
//     all of the above round-trip intact. The large body is the largest the client can receive:
//     v5.1.3 keeps gRPC's default 4 MiB receive limit (its MaxCallRecvMsgSize option is never
//     applied), so a body of the broker's full 4 MiB cannot reach a Go consumer.

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	v2 "github.com/apache/rocketmq-clients/golang/v5/protocol/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// grpcRecvLimit is gRPC-Go's default receive limit, which v5.1.3 consumers keep; a delivered
// message carries its properties and receipt handle besides the body.
const (
	grpcRecvLimit    = 4 * 1024 * 1024
	deliveryHeadroom = 64 * 1024
)

func badInput(s *Scenario) {
	topic := s.Unique("badinput")
	group := s.Unique("grp-badinput")
	// The client logs the failed route queries.
	s.AllowClientErrors("ILLEGAL_TOPIC", "40002")
	producer := s.Producer(nil, topic)
	bodies := map[string][]byte{}
	control := []byte("control-before-" + s.suffix)
	bodies[s.Send(producer, Msg{Topic: topic, Body: control, Tag: "C"}).MessageID] = control
	s.Step("send to %s works", topic)

	// 1. illegal topic names
	long := strings.Repeat("t"+strings.NewReplacer("-", "x", "_", "x").Replace(s.suffix)+"x", 128)[:128]
	for _, bad := range []string{long, "bad topic!" + s.suffix} {
		_, err := producer.Send(context.Background(), Msg{Topic: bad, Body: []byte("nowhere")}.build())
		s.Check(err != nil, "a send to the illegal topic name %q succeeded", bad)
		s.Check(rpcCode(err) == int32(v2.Code_ILLEGAL_TOPIC), "send to the illegal topic name %q: %s; want "+
			"*ErrRpcStatus ILLEGAL_TOPIC (40002)", bad, errorText(err))
		s.Step("send to a %d-character topic name refused: %s", len(bad), errorText(err))
	}

	// 2. one byte over the max body size, through the client
	random := rand.New(rand.NewSource(42))
	over := make([]byte, s.maxBody+1)
	random.Read(over)
	_, err := producer.Send(context.Background(), Msg{Topic: topic, Body: over}.build())
	s.Check(err != nil, "the client sent a body of max_body_size + 1 bytes")
	s.Check(strings.Contains(err.Error(), fmt.Sprintf("max size=%d bytes", s.maxBody)),
		"a body of max_body_size + 1 bytes: %s; want the client's own refusal naming the broker's limit of %d "+
			"bytes (from the settings reply)", errorText(err), s.maxBody)
	s.Step("the client refused a body of %d bytes: %v", len(over), err)

	// 3. the same body straight to the broker
	code, message := rawSend(s, topic, over)
	s.Check(code == v2.Code_MESSAGE_BODY_TOO_LARGE || code == v2.Code_PAYLOAD_TOO_LARGE,
		"SendMessage with a body of max_body_size + 1 bytes answered %v (%s); want MESSAGE_BODY_TOO_LARGE (41301)",
		code, message)
	s.Step("SendMessage with a body of %d bytes answered %v (%s); the client reports that as %v", len(over),
		code, message, &rmq.ErrRpcStatus{Code: int32(code), Message: message})

	// 4. a large body and a binary body round-trip; the broker serves on
	largeSize := min(s.maxBody, grpcRecvLimit-deliveryHeadroom)
	large := over[:largeSize]
	binary := make([]byte, 256*4)
	for i := range binary {
		binary[i] = byte(i)
	}
	after := []byte("control-after-" + s.suffix)
	for _, body := range [][]byte{large, binary, after} {
		bodies[s.Send(producer, Msg{Topic: topic, Body: body, Tag: "L"}).MessageID] = body
	}
	s.Step("sent a %d-byte body, a %d-byte binary body and a control message", len(large), len(binary))
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	deadline := time.Now().Add(20 * time.Second)
	for len(bodies) > 0 {
		s.Check(time.Now().Before(deadline), "%d message(s) not received within 20 s", len(bodies))
		for _, m := range s.ReceiveDefault(consumer) {
			want, ok := bodies[m.GetMessageId()]
			s.Check(ok, "unexpected message: %s", Describe(m))
			s.Check(len(m.GetBody()) == len(want), "body of %s is %d bytes, want %d", m.GetMessageId(),
				len(m.GetBody()), len(want))
			s.Check(bytes.Equal(m.GetBody(), want), "body of %s differs from what was sent", m.GetMessageId())
			s.Ack(consumer, m)
			delete(bodies, m.GetMessageId())
		}
	}
	s.Step("all bodies received intact; the broker served on after the refusals")
}

// rawSend sends one normal message with body straight to SendMessage, dialled as the client
// dials (TLS, any certificate) with the headers it sends, and returns the answer's code: the
// entry's if the top status is OK.
func rawSend(s *Scenario, topic string, body []byte) (v2.Code, string) {
	conn, err := grpc.NewClient(s.endpoint,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true})),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(2*s.maxBody+(1<<20))))
	s.Must(err, "dialling "+s.endpoint)
	defer conn.Close()
	host, _ := os.Hostname()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-mq-language", "GO", "x-mq-protocol", "v2",
		"x-mq-client-version", ClientVersion, "x-mq-client-id", fmt.Sprintf("%s@%d@raw", host, os.Getpid()),
		"x-mq-request-id", fmt.Sprintf("raw-%d", time.Now().UnixNano()))
	request := &v2.SendMessageRequest{Messages: []*v2.Message{{
		Topic: &v2.Resource{Name: topic},
		SystemProperties: &v2.SystemProperties{
			MessageId:     rmq.GetMessageIdCodecInstance().NextMessageId().String(),
			MessageType:   v2.MessageType_NORMAL,
			BodyEncoding:  v2.Encoding_IDENTITY,
			BornTimestamp: timestamppb.Now(),
			BornHost:      host,
		},
		Body: body,
	}}}
	resp, err := v2.NewMessagingServiceClient(conn).SendMessage(ctx, request)
	s.Must(err, "SendMessage with a body of max_body_size + 1 bytes (the gRPC call itself)")
	code, message := resp.GetStatus().GetCode(), resp.GetStatus().GetMessage()
	if code == v2.Code_OK && len(resp.GetEntries()) == 1 {
		code, message = resp.GetEntries()[0].GetStatus().GetCode(), resp.GetEntries()[0].GetStatus().GetMessage()
	}
	return code, message
}
