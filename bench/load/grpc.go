package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of proto/kafka_ambassador.proto, encoded by hand so that no generated code is needed.
const (
	prodRqTopic        = 1 // string
	prodRqMessage      = 2 // bytes
	prodRqStreamOffset = 3 // uint64
	prodRsStreamOffset = 3 // uint64
	prodRsError        = 4 // string
	prodRsCode         = 5 // int32
)

// prodRs is what the generator needs of a reply.
type prodRs struct {
	streamOffset uint64
	code         int32
	err          string
}

// rawCodec sends ProdRq already encoded ([]byte) and decodes ProdRs into *prodRs. Named "proto" because the
// bytes on the wire are protobuf; the content-type stays application/grpc.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	rs, ok := v.(*prodRs)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	*rs = prodRs{}
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return fmt.Errorf("ProdRs: %w", protowire.ParseError(n))
		}
		data = data[n:]
		switch {
		case num == prodRsStreamOffset && typ == protowire.VarintType:
			rs.streamOffset, n = protowire.ConsumeVarint(data)
		case num == prodRsCode && typ == protowire.VarintType:
			var c uint64
			c, n = protowire.ConsumeVarint(data)
			rs.code = int32(c)
		case num == prodRsError && typ == protowire.BytesType:
			var s []byte
			s, n = protowire.ConsumeBytes(data)
			rs.err = string(s)
		default:
			n = protowire.ConsumeFieldValue(num, typ, data)
		}
		if n < 0 {
			return fmt.Errorf("ProdRs field %d: %w", num, protowire.ParseError(n))
		}
		data = data[n:]
	}
	return nil
}

// prodRqPrefix is the part of every ProdRq of a run that does not change: topic and message.
func prodRqPrefix(topic string, value []byte) []byte {
	b := protowire.AppendTag(nil, prodRqTopic, protowire.BytesType)
	b = protowire.AppendString(b, topic)
	b = protowire.AppendTag(b, prodRqMessage, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

// prodRq is a new encoded ProdRq: the prefix and a streamOffset. New each time, as the transport may still hold
// the previous one.
func prodRq(prefix []byte, streamOffset uint64) []byte {
	b := append(make([]byte, 0, len(prefix)+11), prefix...)
	b = protowire.AppendTag(b, prodRqStreamOffset, protowire.VarintType)
	return protowire.AppendVarint(b, streamOffset)
}

var produceStream = &grpc.StreamDesc{StreamName: "Produce", ServerStreams: true, ClientStreams: true}

type grpcResult struct {
	Target     string   `json:"target"`
	Streams    int      `json:"streams"`
	Window     int      `json:"window"`
	Sent       int64    `json:"sent"`
	Answered   int64    `json:"answered"`
	OK         int64    `json:"ok"`
	Errors     int64    `json:"errors"`
	OKAtStop   int64    `json:"okAtStop"`
	Unanswered int64    `json:"unanswered"`
	FirstError string   `json:"firstError"`
	Seconds    float64  `json:"seconds"`
	OKPerSec   float64  `json:"okPerSec"`
	P50Ms      *float64 `json:"p50Ms"`
	P99Ms      *float64 `json:"p99Ms"`
	CPUSeconds float64  `json:"cpuSeconds"`
	// OK records per second of the window, by the second their reply arrived (the last one: after the window).
	Timeline []int64 `json:"timeline"`
}

// grpcStream is one Produce stream on its own connection, with its counts (measured records only).
type grpcStream struct {
	conn   *grpc.ClientConn
	stream grpc.ClientStream
	w      window
	// slots holds the free places of the window: a record takes one to be sent and its reply gives it back.
	// The slot number is the low 32 bits of the record's streamOffset, so replies may come in any order.
	slots  chan uint32
	sentAt []atomic.Int64 // per slot: send time, ns since the window start
	dead   chan struct{}  // closed when the receiving side ends

	sent, answered, ok, errors, okAtStop int64
	latencies                            []uint32
	timeline                             []int64
	firstError                           string
}

func runGRPC(args []string) error {
	fs := flag.NewFlagSet("grpc", flag.ExitOnError)
	target := fs.String("target", "127.0.0.1:18282", "HOST:PORT of the gRPC listener")
	topic := fs.String("topic", "bench", "topic of every record")
	seconds := fs.Float64("seconds", 15, "measured sending time")
	warmup := fs.Float64("warmup", 0, "seconds of the same load before, not counted")
	streams := fs.Int("streams", 4, "Produce streams, each on its own connection")
	windowSize := fs.Int("window", 1000, "unanswered records per stream")
	size := fs.Int("size", 100, "bytes per record value")
	ca := fs.String("ca", "", "PEM file of the CA that signed the listener's certificate: TLS instead of plain text")
	_ = fs.Parse(args)
	if *seconds <= 0 || *warmup < 0 || *streams < 1 || *windowSize < 1 || *size < 0 {
		return errors.New("-seconds must be > 0, -warmup >= 0, -streams and -window >= 1, -size >= 0")
	}

	creds := insecure.NewCredentials()
	if *ca != "" {
		c, err := credentials.NewClientTLSFromFile(*ca, "")
		if err != nil {
			return fmt.Errorf("-ca: %w", err)
		}
		creds = c
	}
	prefix := prodRqPrefix(*topic, make([]byte, *size))
	w := newWindow(*warmup, *seconds)
	all := make([]*grpcStream, *streams)
	for i := range all {
		s, err := openStream(*target, creds, w, *windowSize)
		if err != nil {
			for _, o := range all[:i] {
				o.conn.Close()
			}
			return fmt.Errorf("stream %d: %w", i, err)
		}
		all[i] = s
	}
	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { s.run(prefix) })
	}
	cpu0 := w.waitForStart()
	wg.Wait()
	cpu := cpuSeconds() - cpu0

	r := grpcResult{Target: *target, Streams: *streams, Window: *windowSize, Seconds: *seconds,
		CPUSeconds: cpu, Timeline: make([]int64, w.buckets())}
	parts := make([][]uint32, 0, len(all))
	messages := make([]string, 0, len(all))
	for _, s := range all {
		r.Sent += s.sent
		r.Answered += s.answered
		r.OK += s.ok
		r.Errors += s.errors
		r.OKAtStop += s.okAtStop
		for i, n := range s.timeline {
			r.Timeline[i] += n
		}
		parts = append(parts, s.latencies)
		messages = append(messages, s.firstError)
	}
	r.Unanswered = r.Sent - r.Answered
	r.FirstError = firstOf(messages)
	r.OKPerSec = float64(r.OK) / *seconds
	r.P50Ms, r.P99Ms = percentilesMs(parts)
	return printJSON(r)
}

func openStream(target string, creds credentials.TransportCredentials, w window, size int) (*grpcStream, error) {
	// One ClientConn per stream: its own HTTP/2 connection.
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			conn.Close()
			return nil, fmt.Errorf("connect %s: not ready after 10 s (%s)", target, st)
		}
	}
	stream, err := conn.NewStream(context.Background(), produceStream, "/KafkaAmbassador/Produce",
		grpc.ForceCodec(rawCodec{}))
	if err != nil {
		conn.Close()
		return nil, err
	}
	s := &grpcStream{conn: conn, stream: stream, w: w, slots: make(chan uint32, size),
		sentAt: make([]atomic.Int64, size), dead: make(chan struct{}), timeline: make([]int64, w.buckets())}
	for i := range size {
		s.slots <- uint32(i)
	}
	return s, nil
}

// run sends until the window ends, waits for the outstanding replies (bounded), half-closes the stream and
// waits for the server to end it.
func (s *grpcStream) run(prefix []byte) {
	defer s.conn.Close()
	received := make(chan struct{})
	go func() {
		defer close(received)
		s.receive()
	}()
	stop := time.NewTimer(time.Until(s.w.end))
	defer stop.Stop()
	held := 0 // slots taken back once sending stopped
send:
	for seq := uint64(1); ; seq++ {
		var slot uint32
		select {
		case slot = <-s.slots:
		case <-stop.C:
			break send
		case <-s.dead:
			break send
		}
		held = 1
		now := time.Now()
		if !now.Before(s.w.end) {
			break
		}
		s.sentAt[slot].Store(int64(now.Sub(s.w.start)))
		if s.w.contains(now) {
			s.sent++
		}
		if err := s.stream.SendMsg(prodRq(prefix, seq<<32|uint64(slot))); err != nil {
			break // the receiving side gets the stream's status
		}
		held = 0
	}
	drain := time.NewTimer(drainTimeout)
	defer drain.Stop()
wait:
	for ; held < cap(s.slots); held++ {
		select {
		case <-s.slots:
		case <-s.dead:
			break wait
		case <-drain.C:
			break wait
		}
	}
	_ = s.stream.CloseSend()
	select {
	case <-received:
	case <-time.After(5 * time.Second):
		s.conn.Close() // ends RecvMsg
		<-received
	}
}

// receive counts the replies until the stream ends, giving each one's slot back.
func (s *grpcStream) receive() {
	defer close(s.dead)
	for {
		var rs prodRs
		if err := s.stream.RecvMsg(&rs); err != nil {
			if !errors.Is(err, io.EOF) {
				s.firstError = "stream: " + err.Error()
			}
			return
		}
		now := time.Now()
		slot := uint32(rs.streamOffset)
		if int(slot) >= len(s.sentAt) {
			s.errors++
			if s.firstError == "" {
				s.firstError = fmt.Sprintf("reply with unknown streamOffset %d", rs.streamOffset)
			}
			continue
		}
		at := s.w.start.Add(time.Duration(s.sentAt[slot].Load()))
		if s.w.contains(at) {
			s.answered++
			if rs.code == 0 && rs.err == "" {
				s.ok++
				s.timeline[s.w.second(now)]++
				if now.Before(s.w.end) {
					s.okAtStop++
				}
			} else {
				s.errors++
				if s.firstError == "" {
					s.firstError = fmt.Sprintf("code %d: %s", rs.code, rs.err)
				}
			}
			s.latencies = append(s.latencies, micros(now.Sub(at)))
		}
		s.slots <- slot
	}
}
