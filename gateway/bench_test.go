package gateway

import (
	"strings"
	"testing"
)

// BenchmarkDecodeProduce8MiB: a full-size produce body (1,000 records of
// 8 KiB) through the strict reader.
func BenchmarkDecodeProduce8MiB(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"records":[`)
	for i := 0; i < 1000; i++ {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"key":"k","value":"` + strings.Repeat("v", 8000) + `","headers":{"a":"1","b":"2"}}`)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		v, p := parseJSON(body)
		if p != nil {
			b.Fatal(p.Detail)
		}
		if _, p := decodeProduce(&v, 1000); p != nil {
			b.Fatal(p.Detail)
		}
	}
}
