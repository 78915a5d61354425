package main

import (
	"context"
	"errors"
)

func run(o options) error {
	ctx := context.Background()
	e, err := newEnv(ctx, o)
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.hits(ctx); err != nil {
		return err
	}
	// A stampede that loads twice is reported, and the mix still runs.
	serr := e.stampede(ctx)
	return errors.Join(serr, e.mix(ctx))
}
