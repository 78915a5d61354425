package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

func run(o options) error {
	// An interrupted run still deletes its keys, queues and exchanges.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := newEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.hits(ctx); err != nil || o.hitsOnly {
		return err
	}
	// A stampede that loads twice is reported, and the mix still runs.
	serr := e.stampede(ctx)
	return errors.Join(serr, e.mix(ctx))
}
