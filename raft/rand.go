package raft

// prng is a splitmix64 generator. All randomness in a node (the randomized
// election timeout) comes from Config.Seed through it, so a run is a pure
// function of its inputs; there is no global random source.
type prng struct{ state uint64 }

func (p *prng) next() uint64 {
	p.state += 0x9e3779b97f4a7c15
	z := p.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a value in [0, n) for n > 0.
func (p *prng) intn(n int) int {
	if n <= 0 {
		panic("raft: prng.intn with n <= 0")
	}
	return int(p.next() % uint64(n))
}
