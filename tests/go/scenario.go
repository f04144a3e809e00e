package main

// Shared plumbing of the Go client scenarios: arguments, the hard timeout, step logging,
// client lifecycle, the client's log and the checks every scenario makes of what it receives.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	"github.com/apache/rocketmq-clients/golang/v5/credentials"
	v2 "github.com/apache/rocketmq-clients/golang/v5/protocol/v2"
)

// ClientVersion is the github.com/apache/rocketmq-clients/golang/v5 version go.mod pins.
const ClientVersion = "v5.1.3"

// shutdownWait bounds a client's GracefulStop: a slow shutdown is reported, never a hang.
const shutdownWait = 10 * time.Second

// knownClientNoise are warnings and errors v5.1.3 logs whatever the server does.
var knownClientNoise = []string{
	// A push consumer's long poll that found nothing ends with MESSAGE_NOT_FOUND (40401), which
	// the client logs as a reception error before polling again.
	"ErrRpcStatus=&{40401 ",
	// The push consumer's flow control when its local cache is full.
	"cache is full",
	"exceeds the threshold, threshold=",
	// GracefulStop of a push consumer cuts its last long polls short.
	"Timeout waiting for all inflight receive requests",
}

// failure is raised (as a panic) by Check and Failf and turned into the FAIL verdict by Run.
type failure struct{ reason string }

// stopper is a started client.
type stopper interface {
	GracefulStop() error
}

// Scenario holds one run: where the broker is, its tuning, the clients to stop at the end.
type Scenario struct {
	name        string
	endpoint    string
	suffix      string
	timeout     time.Duration
	invisible   time.Duration
	await       time.Duration
	maxAttempts int
	maxBody     int
	started     time.Time
	logFile     string

	// creds sign the clients made from now on (set with SignAs); nil: an empty credential.
	creds *credentials.SessionCredentials

	mu      sync.Mutex
	current string
	clients []stopper
	allowed []string
}

func envInt(name string, def int) int {
	raw := os.Getenv(name)
	if raw == "" {
		return def
	}
	v, err := strconv.Atoi(raw)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bad %s=%q: not an integer\n", name, raw)
		os.Exit(2)
	}
	return v
}

// newScenario reads the tuning, starts the hard timeout and points the client's log at
// $HOME/logs/rocketmqlogs.
func newScenario(name, endpoint, suffix string) *Scenario {
	s := &Scenario{
		name:        name,
		endpoint:    endpoint,
		suffix:      suffix,
		timeout:     time.Duration(envInt("ROCKETLOG_SCENARIO_TIMEOUT", 60)) * time.Second,
		invisible:   time.Duration(envInt("ROCKETLOG_INVISIBLE_SECS", 10)) * time.Second,
		await:       time.Duration(envInt("ROCKETLOG_AWAIT_SECS", 5)) * time.Second,
		maxAttempts: envInt("ROCKETLOG_MAX_ATTEMPTS", 17),
		maxBody:     envInt("ROCKETLOG_MAX_BODY_BYTES", 4*1024*1024),
		started:     time.Now(),
		current:     "start",
		allowed:     append([]string(nil), knownClientNoise...),
	}
	s.logFile = setUpClientLog()
	time.AfterFunc(s.timeout, s.hardTimeout)
	s.Step("scenario %s: endpoint=%s suffix=%s client=%s tls=%v invisible=%v await=%v "+
		"max_attempts=%d max_body=%d timeout=%v", name, endpoint, suffix, ClientVersion,
		rmq.EnableSsl, s.invisible, s.await, s.maxAttempts, s.maxBody, s.timeout)
	return s
}

// setUpClientLog sends the client's log to $HOME/logs/rocketmqlogs/rocketmq_client_go.log.
// Left alone, v5.1.3 logs under the `user.home` environment variable (a Java property name),
// which is normally unset, so into /logs at the file-system root. The client reads the
// variables at init; ResetLogger makes it read them again (as its own examples do).
func setUpClientLog() string {
	root := os.Getenv(rmq.CLIENT_LOG_ROOT)
	if root == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		root = home + "/logs/rocketmqlogs"
		os.Setenv(rmq.CLIENT_LOG_ROOT, root)
	}
	name := os.Getenv(rmq.CLIENT_LOG_FILENAME)
	if name == "" {
		name = "rocketmq_client_go.log"
	}
	rmq.ResetLogger()
	return root + "/" + name
}

func (s *Scenario) hardTimeout() {
	s.mu.Lock()
	step := s.current
	s.mu.Unlock()
	fmt.Printf("FAIL %s: hard timeout of %v passed during step %q; goroutine stacks follow on stderr\n",
		s.name, s.timeout, step)
	_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
	s.dumpClientLog()
	os.Exit(3)
}

func (s *Scenario) elapsed() float64 { return time.Since(s.started).Seconds() }

// Step prints progress; the hard-timeout message names the last step.
func (s *Scenario) Step(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.current = text
	s.mu.Unlock()
	fmt.Printf("[%7.2fs] %s\n", s.elapsed(), text)
}

// Unique is a topic or group name of this run.
func (s *Scenario) Unique(base string) string { return base + "-" + s.suffix }

// Check fails the scenario with the formatted reason unless cond holds.
func (s *Scenario) Check(cond bool, format string, args ...any) {
	if !cond {
		panic(failure{fmt.Sprintf(format, args...)})
	}
}

// Failf fails the scenario.
func (s *Scenario) Failf(format string, args ...any) {
	panic(failure{fmt.Sprintf(format, args...)})
}

// Must fails the scenario if err is not nil.
func (s *Scenario) Must(err error, what string) {
	if err != nil {
		s.Failf("%s: %s", what, errorText(err))
	}
}

// AllowClientErrors: client warnings and errors containing any of fragments are expected.
func (s *Scenario) AllowClientErrors(fragments ...string) {
	s.mu.Lock()
	s.allowed = append(s.allowed, fragments...)
	s.mu.Unlock()
}

// ----- clients -----------------------------------------------------------------------------

func (s *Scenario) config(group string) *rmq.Config {
	creds := s.creds
	if creds == nil {
		// No access key: the client still signs every call (an empty credential).
		creds = &credentials.SessionCredentials{}
	}
	return &rmq.Config{
		Endpoint:      s.endpoint,
		ConsumerGroup: group,
		Credentials:   creds,
	}
}

// SignAs makes the clients created from now on sign with accessKey and secret ("" for none).
func (s *Scenario) SignAs(accessKey, secret string) {
	if accessKey == "" {
		s.creds = nil
		return
	}
	s.creds = &credentials.SessionCredentials{AccessKey: accessKey, AccessSecret: secret}
}

func (s *Scenario) keep(c stopper) {
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
}

// Producer starts a producer for topics (with checker, if not nil).
func (s *Scenario) Producer(checker *rmq.TransactionChecker, topics ...string) rmq.Producer {
	opts := []rmq.ProducerOption{rmq.WithTopics(topics...)}
	if checker != nil {
		opts = append(opts, rmq.WithTransactionChecker(checker))
	}
	p, err := rmq.NewProducer(s.config(""), opts...)
	s.Must(err, "creating the producer")
	s.Must(p.Start(), "starting the producer")
	s.keep(p)
	return p
}

// SimpleConsumer starts a simple consumer of group; subscription maps topic -> tag expression.
func (s *Scenario) SimpleConsumer(group string, subscription map[string]string) rmq.SimpleConsumer {
	subs := map[string]*rmq.FilterExpression{}
	for topic, expr := range subscription {
		subs[topic] = rmq.NewFilterExpression(expr)
	}
	c, err := rmq.NewSimpleConsumer(s.config(group), rmq.WithSimpleAwaitDuration(s.await),
		rmq.WithSimpleSubscriptionExpressions(subs))
	s.Must(err, "creating the simple consumer of "+group)
	s.Must(c.Start(), "starting the simple consumer of "+group)
	s.keep(c)
	return c
}

// PushConsumer starts a push consumer of group with the client's default settings.
func (s *Scenario) PushConsumer(group string, subscription map[string]string,
	listener func(*rmq.MessageView) rmq.ConsumerResult) rmq.PushConsumer {
	subs := map[string]*rmq.FilterExpression{}
	for topic, expr := range subscription {
		subs[topic] = rmq.NewFilterExpression(expr)
	}
	c, err := rmq.NewPushConsumer(s.config(group), rmq.WithPushSubscriptionExpressions(subs),
		rmq.WithPushMessageListener(&rmq.FuncMessageListener{Consume: listener}))
	s.Must(err, "creating the push consumer of "+group)
	s.Must(c.Start(), "starting the push consumer of "+group)
	s.keep(c)
	return c
}

// Forget stops c now (bounded) instead of at the end.
func (s *Scenario) Forget(c stopper) {
	s.mu.Lock()
	for i, k := range s.clients {
		if k == c {
			s.clients = append(s.clients[:i], s.clients[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	stopAll([]stopper{c})
}

func stopAll(clients []stopper) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range clients {
			if err := c.GracefulStop(); err != nil {
				fmt.Fprintf(os.Stderr, "GracefulStop of a client: %v\n", err)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(shutdownWait):
		fmt.Fprintf(os.Stderr, "client shutdown did not finish within %v\n", shutdownWait)
	}
}

// ----- messages ----------------------------------------------------------------------------

// Msg is what a scenario sends.
type Msg struct {
	Topic string
	Body  []byte
	Tag   string
	Keys  []string
	Props map[string]string
	Group string
	At    *time.Time
}

func (m Msg) build() *rmq.Message {
	msg := &rmq.Message{Topic: m.Topic, Body: m.Body}
	if m.Tag != "" {
		msg.SetTag(m.Tag)
	}
	if len(m.Keys) > 0 {
		msg.SetKeys(m.Keys...)
	}
	for k, v := range m.Props {
		msg.AddProperty(k, v)
	}
	if m.Group != "" {
		msg.SetMessageGroup(m.Group)
	}
	if m.At != nil {
		msg.SetDelayTimestamp(*m.At)
	}
	return msg
}

// Send sends m and checks the receipt: one entry with a message id.
func (s *Scenario) Send(p rmq.Producer, m Msg) *rmq.SendReceipt {
	receipts, err := p.Send(context.Background(), m.build())
	s.Must(err, "send to "+m.Topic)
	return s.oneReceipt(receipts, m.Topic)
}

func (s *Scenario) oneReceipt(receipts []*rmq.SendReceipt, topic string) *rmq.SendReceipt {
	s.Check(len(receipts) == 1, "send to %s returned %d receipts, want 1", topic, len(receipts))
	s.Check(receipts[0].MessageID != "", "send to %s returned an empty message id", topic)
	return receipts[0]
}

// Describe is one line with everything a scenario checks of a received message.
func Describe(m *rmq.MessageView) string {
	body := m.GetBody()
	shown := string(body)
	if len(body) > 64 {
		shown = string(body[:64]) + "..."
	}
	tag, group := "<none>", "<none>"
	if m.GetTag() != nil {
		tag = *m.GetTag()
	}
	if m.GetMessageGroup() != nil {
		group = *m.GetMessageGroup()
	}
	keys := append([]string(nil), m.GetKeys()...)
	sort.Strings(keys)
	props := make([]string, 0, len(m.GetProperties()))
	for k, v := range m.GetProperties() {
		props = append(props, k+"="+v)
	}
	sort.Strings(props)
	return fmt.Sprintf("id=%s topic=%s tag=%s keys=%v props=%v group=%s attempt=%d body=%q",
		m.GetMessageId(), m.GetTopic(), tag, keys, props, group, m.GetDeliveryAttempt(), shown)
}

// rpcCode is the status code the client reports in err (0 if it is not an ErrRpcStatus).
func rpcCode(err error) int32 {
	if e, ok := rmq.AsErrRpcStatus(err); ok {
		return e.GetCode()
	}
	var e *rmq.ErrRpcStatus
	if errors.As(err, &e) {
		return e.GetCode()
	}
	return 0
}

func errorText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%T: %v", err, err)
}

// Receive makes one receive call (one long poll) and logs what came back. An empty long poll
// is answered MESSAGE_NOT_FOUND, which this client reports as an error: that is no message.
func (s *Scenario) Receive(c rmq.SimpleConsumer, maxNum int32, invisible time.Duration) []*rmq.MessageView {
	t0 := time.Now()
	msgs, err := c.Receive(context.Background(), maxNum, invisible)
	took := time.Since(t0).Seconds()
	if err != nil && rpcCode(err) != int32(v2.Code_MESSAGE_NOT_FOUND) {
		s.Failf("receive(max=%d, invisible=%v) by %s failed after %.2fs: %s", maxNum, invisible,
			c.GetGroupName(), took, errorText(err))
	}
	s.Step("receive(max=%d, invisible=%v) by %s -> %d message(s) in %.2fs", maxNum, invisible,
		c.GetGroupName(), len(msgs), took)
	for _, m := range msgs {
		fmt.Printf("           %s\n", Describe(m))
	}
	s.Check(len(msgs) <= int(maxNum), "receive(maxMessageNum=%d) returned %d messages", maxNum, len(msgs))
	for _, m := range msgs {
		s.Check(m.GetReceiptHandle() != "", "message %s was delivered without a receipt handle", m.GetMessageId())
	}
	return msgs
}

// ReceiveDefault receives up to 32 messages with the scenario's invisible duration.
func (s *Scenario) ReceiveDefault(c rmq.SimpleConsumer) []*rmq.MessageView {
	return s.Receive(c, 32, s.invisible)
}

// Ack acknowledges m. v5.1.3's Ack reports only transport errors, never the status code, so
// the scenarios check that acks held by waiting past the invisible time.
func (s *Scenario) Ack(c rmq.SimpleConsumer, m *rmq.MessageView) {
	s.Must(c.Ack(context.Background(), m), "ack of "+m.GetMessageId())
}

// ExpectNothing receives repeatedly for at least d; any message fails the scenario.
func (s *Scenario) ExpectNothing(c rmq.SimpleConsumer, d time.Duration, why string) {
	until := time.Now().Add(d)
	for {
		msgs := s.ReceiveDefault(c)
		if len(msgs) > 0 {
			lines := make([]string, len(msgs))
			for i, m := range msgs {
				lines[i] = Describe(m)
			}
			s.Failf("expected no message %s, got %s", why, strings.Join(lines, "; "))
		}
		if !time.Now().Before(until) {
			return
		}
	}
}

// sameSet is whether a and b hold the same strings.
func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// ----- the run -----------------------------------------------------------------------------

// Run runs body and exits the process with the verdict.
func (s *Scenario) Run(body func(*Scenario)) {
	reason := func() (reason string) {
		defer func() {
			if r := recover(); r != nil {
				if f, ok := r.(failure); ok {
					reason = f.reason
					return
				}
				reason = fmt.Sprintf("the scenario panicked: %v", r)
				_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			}
		}()
		body(s)
		return ""
	}()
	// Judge the client's log up to here: shutting down cuts push consumers' polls short.
	unexpected := s.unexpectedClientErrors()
	s.Step("shutting clients down")
	s.mu.Lock()
	clients := s.clients
	s.clients = nil
	s.mu.Unlock()
	stopAll(clients)
	if reason == "" && len(unexpected) > 0 {
		reason = fmt.Sprintf("the client logged %d unexpected warning(s)/error(s), first: %s",
			len(unexpected), unexpected[0])
	}
	if reason != "" {
		s.dumpClientLog()
		fmt.Printf("FAIL %s: %s\n", s.name, reason)
		os.Exit(1)
	}
	fmt.Printf("PASS %s in %.1fs\n", s.name, s.elapsed())
	os.Exit(0)
}
