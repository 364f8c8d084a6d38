package main

import (
	"context"
	"errors"
	"io"
	stdlog "log"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node"
	"github.com/meshgw/meshgw/node/config"
)

func runAgent(args []string, stdout, stderr io.Writer) error {
	b := config.NewBuilder(args)
	b.Output = stderr
	cfg, err := b.Build()
	if err != nil {
		if errors.Is(err, config.ErrHelp) {
			return nil
		}
		return &exitError{code: 2, err: errors.New(oneLine(err))}
	}
	if cfg.TempDataDir() {
		defer os.RemoveAll(cfg.DataDir)
	}
	log := newLogger(cfg, stderr)
	node.InstallLibraryLoggers(log)
	tuneGC()

	agent, err := node.New(cfg, version, log)
	if err != nil {
		return &exitError{code: 1, err: errors.New(oneLine(err))}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if err := agent.Start(ctx); err != nil {
		agent.Shutdown()
		return &exitError{code: 1, err: errors.New(oneLine(err))}
	}
	ev := log.Info().Str("http", agent.HTTPAddr())
	if p := agent.ProxyAddr(); p != "" {
		ev = ev.Str("proxy", p)
	}
	ev.Str("cluster", cfg.Cluster).Strs("roles", cfg.Roles).Str("version", version).Msg("agent running")

	select {
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Msg("leaving the mesh (a second signal stops at once)")
	case <-agent.LeaveRequested():
		log.Info().Msg("leave requested through the API")
	}
	done := make(chan error, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(context.Background(), cfg.LeaveTimeout+5*time.Second)
		defer lcancel()
		done <- agent.Stop(lctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			log.Warn().Err(err).Msg("graceful stop")
		}
		log.Info().Msg("agent stopped")
		return nil
	case sig := <-sigs:
		log.Warn().Str("signal", sig.String()).Msg("second signal: stopping at once")
		if cfg.TempDataDir() {
			os.RemoveAll(cfg.DataDir)
		}
		os.Exit(1)
	}
	return nil
}

// newLogger builds the one logger of the process: console for people, JSON
// for machines, with the node name on every line. The standard library's
// logger is routed into it so no library writes raw lines.
func newLogger(cfg config.Runtime, w io.Writer) zerolog.Logger {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	var out io.Writer = w
	if cfg.LogFormat == "console" {
		cw := zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
		if f, ok := w.(*os.File); !ok || !isTerminal(f) {
			cw.NoColor = true
		}
		out = cw
	}
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	log := zerolog.New(out).Level(lvl).With().Timestamp().Str("node", cfg.NodeName).Logger()
	std := log.With().Str("component", "stdlog").Logger()
	stdlog.SetFlags(0)
	stdlog.SetOutput(stdWriter{std})
	return log
}

// stdWriter turns std log lines into debug events.
type stdWriter struct{ log zerolog.Logger }

func (s stdWriter) Write(p []byte) (int, error) {
	msg := string(p)
	if n := len(msg); n > 0 && msg[n-1] == '\n' {
		msg = msg[:n-1]
	}
	s.log.Debug().Msg(msg)
	return len(p), nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// agentGCPercent is the agent's GC target when GOGC is not set. The live
// heap of an agent is small (tens of MiB), so the default of 100 makes the
// proxy and write hot paths spend a tenth of their CPU collecting; 400
// trades a few more MiB of heap for that CPU. GOGC in the environment wins.
const agentGCPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(agentGCPercent)
	}
}
