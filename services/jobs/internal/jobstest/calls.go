package jobstest

import (
	"context"
	"path"
	"sync"

	"google.golang.org/grpc"
)

// Calls is a client connection that counts the calls made through it, by
// method name (the last part of the full name: "CompleteTask"), so tests
// can pin how many calls an operation costs. Before, when set, runs
// before each call is sent, with the method name; a test may block in it
// to hold a call.
type Calls struct {
	grpc.ClientConnInterface
	Before func(method string)

	mu sync.Mutex
	n  map[string]int
}

// Invoke counts and makes a unary call.
func (c *Calls) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c.count(method)
	return c.ClientConnInterface.Invoke(ctx, method, args, reply, opts...)
}

// NewStream counts and opens a stream.
func (c *Calls) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c.count(method)
	return c.ClientConnInterface.NewStream(ctx, desc, method, opts...)
}

func (c *Calls) count(method string) {
	name := path.Base(method)
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[name]++
	c.mu.Unlock()
	if c.Before != nil {
		c.Before(name)
	}
}

// N is the calls of method so far.
func (c *Calls) N(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method]
}

// Total is the calls of every method so far.
func (c *Calls) Total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := 0
	for _, n := range c.n {
		t += n
	}
	return t
}
