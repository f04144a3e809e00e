package main

// auth: signed requests and access rules through the Go client's SessionCredentials. The
// harness starts the broker with authentication on and the users of the Python scenario
// auth.py: app/app-secret-key (Pub and Sub on auth-ok-*, Pub denied on auth-ok-readonly-*,
// Sub as groups auth-grp-*) and the super user root/root-secret-key.
//
//  1. app sends to and consumes from auth-ok-<suffix> (the control).
//  2. A wrong secret key and an unknown access key: code 40100 (UNAUTHORIZED) naming the check.
//  3. A topic no rule allows, a topic a deny rule covers, a group no rule allows: 40300
//     (FORBIDDEN) naming the resource.
//  4. No credentials: 40100.
//  5. The broker still serves app and root.

import (
	"context"
	"strings"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

const (
	codeUnauthorized = 40100
	codeForbidden    = 40300
)

// codeNames: how the client spells a code in the errors it wraps during startup.
var codeNames = map[int32]string{codeUnauthorized: "CODE: UNAUTHORIZED", codeForbidden: "CODE: FORBIDDEN"}

// refusedWith checks that err carries code and fragment (a refused route query during start
// comes wrapped as text; a refused call afterwards as an ErrRpcStatus).
func (s *Scenario) refusedWith(what string, err error, code int32, fragment string) {
	s.Check(err != nil, "%s: succeeded, should be refused with %d", what, code)
	coded := rpcCode(err) == code || strings.Contains(err.Error(), codeNames[code])
	s.Check(coded && strings.Contains(err.Error(), fragment),
		"%s: %s; want code %d and %q", what, errorText(err), code, fragment)
	s.Step("%s: refused: %s", what, errorText(err))
}

// trySend starts a producer for topic and sends one message, returning the first error.
func (s *Scenario) trySend(topic string) error {
	p, err := rmq.NewProducer(s.config(""), rmq.WithTopics(topic))
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	s.keep(p)
	_, err = p.Send(context.Background(), Msg{Topic: topic, Body: []byte("x")}.build())
	return err
}

func auth(s *Scenario) {
	// The client logs each refused call (and resends refused sends before giving up).
	s.AllowClientErrors("40100", "40300", "UNAUTHORIZED", "FORBIDDEN", "failed to send message")
	topic := s.Unique("auth-ok")
	readonly := s.Unique("auth-ok-readonly")
	other := s.Unique("auth-other")
	group := s.Unique("auth-grp")

	s.SignAs("app", "app-secret-key")
	app := s.Producer(nil, topic)
	s.Send(app, Msg{Topic: topic, Tag: "A", Body: []byte("allowed")})
	consumer := s.SimpleConsumer(group, map[string]string{topic: "*"})
	var got []*rmq.MessageView
	for deadline := time.Now().Add(20 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		got = s.ReceiveDefault(consumer)
	}
	s.Check(len(got) == 1 && string(got[0].GetBody()) == "allowed", "app consumes what it sent, got %d", len(got))
	s.Ack(consumer, got[0])
	s.Step("app publishes to and consumes from its own topic")

	s.SignAs("app", "not-the-secret")
	s.refusedWith("wrong secret key", s.trySend(topic), codeUnauthorized, "bad signature")
	s.SignAs("nobody", "nobody-secret")
	s.refusedWith("unknown access key", s.trySend(topic), codeUnauthorized, "unknown access key")

	s.SignAs("app", "app-secret-key")
	s.refusedWith("a topic no rule allows", s.trySend(other), codeForbidden, other)
	_, err := app.Send(context.Background(), Msg{Topic: readonly, Body: []byte("x")}.build())
	s.refusedWith("a topic a deny rule covers", err, codeForbidden, "denied by rule")
	otherGroup := s.Unique("other-grp")
	c, err := rmq.NewSimpleConsumer(s.config(otherGroup), rmq.WithSimpleAwaitDuration(time.Second),
		rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{topic: rmq.SUB_ALL}))
	s.Must(err, "creating the consumer of "+otherGroup)
	if err = c.Start(); err == nil {
		s.keep(c)
		_, err = c.Receive(context.Background(), 1, s.invisible)
	}
	s.refusedWith("a group no rule allows", err, codeForbidden, otherGroup)

	s.SignAs("", "")
	s.refusedWith("no credentials", s.trySend(topic), codeUnauthorized, "authentication is required")

	s.Send(app, Msg{Topic: topic, Body: []byte("after")})
	s.SignAs("root", "root-secret-key")
	s.Check(s.trySend(other) == nil, "the super user sends anywhere")
	s.Step("the broker still serves app and the super user")
}
