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
	b.Output = nil // dispatch prints -h, on stdout
	cfg, err := b.Build()
	if err != nil {
		if errors.Is(err, config.ErrHelp) {
			return &helpRequest{flags: config.WriteFlagHelp}
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
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)

	if err := agent.Start(ctx); err != nil {
		agent.Shutdown()
		return &exitError{code: 1, err: errors.New(oneLine(err))}
	}
	ev := log.Info().Str("http", agent.HTTPAddr())
	if p := agent.ProxyAddr(); p != "" {
		ev = ev.Str("proxy", p)
	}
	if d := agent.DNSAddr(); d != "" {
		ev = ev.Str("dns", d)
	}
	ev.Str("cluster", cfg.Cluster).Strs("roles", cfg.Roles).Str("version", version).Msg("agent running")

	terminate := false
wait:
	for {
		select {
		case sig := <-sigs:
			log.Info().Str("signal", sig.String()).Msg("stopping (a second signal stops at once)")
			terminate = true
			break wait
		case <-agent.LeaveRequested():
			log.Info().Msg("leave requested through the API: leaving the mesh")
			break wait
		case <-hups:
			cfg = reload(args, cfg, agent, log)
		}
	}
	done := make(chan error, 1)
	go func() {
		lctx, lcancel := context.WithTimeout(context.Background(), cfg.LeaveTimeout+5*time.Second)
		defer lcancel()
		if !terminate {
			done <- agent.Stop(lctx)
			return
		}
		left, err := agent.Terminate(lctx)
		if left {
			log.Info().Msg("left the mesh")
		} else {
			log.Info().Msg("stopped without leaving the mesh: this node holds a Raft replica " +
				"and keeps its place in the group if it is back within -autopilot-dead-after " +
				"(use `meshgw leave` or -leave-on-terminate to leave)")
		}
		done <- err
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
	// The logger itself passes everything; the process-wide level gates
	// it, so SIGHUP can change it for every logger derived from this one.
	setLogLevel(cfg.LogLevel)
	log := zerolog.New(out).Level(zerolog.TraceLevel).With().Timestamp().Str("node", cfg.NodeName).Logger()
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

// setLogLevel sets the process-wide log level (config validated the name).
func setLogLevel(name string) {
	lvl, err := zerolog.ParseLevel(name)
	if err != nil || name == "" {
		lvl = zerolog.InfoLevel
	}
	zerolog.SetGlobalLevel(lvl)
}

// reload re-reads the configuration (file, environment, flags) on SIGHUP and
// applies what can change while the agent runs; anything else that changed
// is named in the log as needing a restart. A configuration that does not
// validate changes nothing.
func reload(args []string, cur config.Runtime, agent *node.Agent, log zerolog.Logger) config.Runtime {
	// Keep the identity: a -dev node must not get a new temporary dir.
	b := config.NewBuilder(append(append([]string{}, args...),
		"-data-dir", cur.DataDir, "-node", cur.NodeName))
	b.Output = io.Discard
	next, err := b.Build()
	if err != nil {
		log.Error().Str("error", oneLine(err)).Msg("SIGHUP: configuration not reloaded; fix it and send SIGHUP again")
		return cur
	}
	applied, restart := config.Reloadable(cur, next)
	if len(applied) == 0 && len(restart) == 0 {
		log.Info().Msg("SIGHUP: configuration unchanged")
		return cur
	}
	reloaded := []string{}
	for _, f := range applied {
		switch f {
		case "log-level":
			setLogLevel(next.LogLevel)
			cur.LogLevel = next.LogLevel
		case "tag":
			if err := agent.SetTags(next.Tags); err != nil {
				log.Error().Err(err).Msg("SIGHUP: tags not reloaded")
				continue
			}
			cur.Tags = next.Tags
		case "max-concurrent-execs":
			if err := agent.SetMaxConcurrentExecs(next.MaxConcurrentExecs); err != nil {
				log.Error().Err(err).Msg("SIGHUP: max-concurrent-execs not reloaded")
				continue
			}
			cur.MaxConcurrentExecs = next.MaxConcurrentExecs
		}
		reloaded = append(reloaded, f)
	}
	ev := log.Info().Strs("reloaded", reloaded)
	if len(restart) > 0 {
		ev = ev.Strs("need_restart", restart)
	}
	ev.Str("log_level", cur.LogLevel).Msg("SIGHUP: configuration reloaded")
	return cur
}
