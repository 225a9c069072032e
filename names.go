package daftka

// MaxNameLen is the longest topic or group name.
const MaxNameLen = 249

// MaxProducerIDLen is the longest producer id.
const MaxProducerIDLen = 64

// ValidName reports whether s is a valid topic or group name:
// ^[a-zA-Z0-9._-]{1,249}$, and not "." or "..".
func ValidName(s string) bool {
	return s != "." && s != ".." && nameChars(s, MaxNameLen)
}

// ValidProducerID reports whether s is a valid producer id: 1..64
// characters of [A-Za-z0-9._-] ("." and ".." included).
func ValidProducerID(s string) bool {
	return nameChars(s, MaxProducerIDLen)
}

// nameChars reports whether s is 1..max characters of [A-Za-z0-9._-].
func nameChars(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// PartitionForKey returns the partition a keyed record goes to when the
// producer names none: the positive part of the 32-bit murmur2 hash of the
// key, modulo the partition count. It is the function of Kafka's default
// partitioner, so a key lands on the same partition number as it would in
// Kafka with the same partition count.
func PartitionForKey(key []byte, partitions int32) int32 {
	return int32(uint32(murmur2(key)&0x7fffffff) % uint32(partitions))
}

// murmur2 is the 32-bit MurmurHash2 with Kafka's seed.
func murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	n := len(data)
	h := seed ^ uint32(n)
	for i := 0; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := n &^ 3
	switch n & 3 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}
