package main

import (
	"encoding/hex"
	"testing"
)

// The expected bytes were encoded by protobufjs (through @grpc/proto-loader) from proto/kafka_ambassador.proto,
// so these tests fail if a field number or wire type here drifts from the proto file.

func TestProdRqMatchesTheProtoFile(t *testing.T) {
	got := hex.EncodeToString(prodRq(prodRqPrefix("bench", []byte("abc")), 3<<32|5))
	const want = "0a0562656e63681203616263188580808030" // {topic: "bench", message: "abc", streamOffset: 3<<32|5}
	if got != want {
		t.Fatalf("ProdRq = %s, want %s", got, want)
	}
}

func TestProdRsDecodes(t *testing.T) {
	cases := []struct {
		hex  string
		want prodRs
	}{
		// {streamOffset: 3<<32|5, partition: 2, offset: 77}: the fields the generator skips are skipped.
		{"1885808080303002384d", prodRs{streamOffset: 3<<32 | 5}},
		// {streamOffset: 7, error: "unavailable: no WAL and no Kafka", code: 503}
		{"18072220756e617661696c61626c653a206e6f2057414c20616e64206e6f204b61666b6128f703",
			prodRs{streamOffset: 7, code: 503, err: "unavailable: no WAL and no Kafka"}},
	}
	for _, c := range cases {
		data, _ := hex.DecodeString(c.hex)
		var got prodRs
		if err := (rawCodec{}).Unmarshal(data, &got); err != nil {
			t.Fatalf("%s: %v", c.hex, err)
		}
		if got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.hex, got, c.want)
		}
	}
}

func TestTruncatedProdRsIsAnError(t *testing.T) {
	data, _ := hex.DecodeString("1807222075") // the error string is cut short
	if err := (rawCodec{}).Unmarshal(data, &prodRs{}); err == nil {
		t.Fatal("a truncated ProdRs decoded without error")
	}
}
