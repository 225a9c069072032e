package daftka

import "testing"

func TestValidName(t *testing.T) {
	good := []string{"a", "orders", "A.b_c-9", string(make([]byte, 0)) + "x"}
	for _, s := range good {
		if !ValidName(s) {
			t.Errorf("ValidName(%q) = false, want true", s)
		}
	}
	long := make([]byte, 250)
	for i := range long {
		long[i] = 'a'
	}
	bad := []string{"", ".", "..", "a/b", "a b", "ä", string(long), "a\x00"}
	for _, s := range bad {
		if ValidName(s) {
			t.Errorf("ValidName(%q) = true, want false", s)
		}
	}
	if !ValidName(string(long[:249])) {
		t.Error("249 characters must be valid")
	}
}

// TestPartitionForKeyMatchesKafka checks the documented key hash against
// values of Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2).
func TestPartitionForKeyMatchesKafka(t *testing.T) {
	// Known murmur2 outputs from Kafka's own test suite (UtilsTest.testMurmur2).
	cases := map[string]int32{
		"21":                         -973932308,
		"foobar":                     -790332482,
		"a-little-bit-long-string":   -985981536,
		"a-little-bit-longer-string": -1486304829,
		"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
	}
	for k, want := range cases {
		if got := murmur2([]byte(k)); got != want {
			t.Errorf("murmur2(%q) = %d, want %d", k, got, want)
		}
	}
	for n := int32(1); n < 50; n++ {
		p := PartitionForKey([]byte("same-key"), n)
		if p < 0 || p >= n || p != PartitionForKey([]byte("same-key"), n) {
			t.Fatalf("PartitionForKey out of range or unstable: %d of %d", p, n)
		}
	}
}

func TestValidProducerID(t *testing.T) {
	for _, s := range []string{"p", ".", "..", "a.b_c-9", string(make([]byte, 0)) + "x"} {
		if !ValidProducerID(s) {
			t.Errorf("ValidProducerID(%q) = false", s)
		}
	}
	long := make([]byte, 65)
	for i := range long {
		long[i] = 'p'
	}
	for _, s := range []string{"", "a b", "é", string(long)} {
		if ValidProducerID(s) {
			t.Errorf("ValidProducerID(%q) = true", s)
		}
	}
	if !ValidProducerID(string(long[:64])) {
		t.Error("64 characters must be valid")
	}
}
