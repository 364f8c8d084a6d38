package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/node"
	"github.com/meshgw/meshgw/node/config"
)

// raftRecover: meshgw raft recover [-yes] AGENT-FLAGS...
//
// It takes the stopped agent's own flags (or -config / MESHGW_* env), so the
// data dir, Raft address and TLS material are the agent's.
func raftRecover(args []string, stdout, stderr io.Writer) error {
	yes := false
	var rest []string
	for _, a := range args {
		if a == "-yes" || a == "--yes" {
			yes = true
			continue
		}
		rest = append(rest, a)
	}
	b := config.NewBuilder(rest)
	b.Output = nil
	cfg, err := b.Build()
	if err != nil {
		if errors.Is(err, config.ErrHelp) {
			return &helpRequest{flags: func(w io.Writer) {
				fmt.Fprintf(w, "  -%-22s %s\n", "yes", "do not ask for confirmation")
				fmt.Fprintln(w, "  and the stopped agent's own flags (-data-dir is required):")
				config.WriteFlagHelp(w)
			}}
		}
		return &exitError{code: 2, err: errors.New(oneLine(err))}
	}
	if !cfg.IsSet("data-dir") {
		return usageErr("-data-dir of the stopped agent is required")
	}
	fmt.Fprintf(stderr, "Recovering the Raft group of cluster %q from %s.\n\n%s\n\n", cfg.Cluster, cfg.DataDir, node.RecoverWarning)
	if !yes {
		fmt.Fprint(stderr, "Type yes to go on: ")
		line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if strings.TrimSpace(line) != "yes" {
			return &exitError{code: 1, err: errors.New("not confirmed; nothing changed")}
		}
	}
	node.InstallLibraryLoggers(newLogger(cfg, stderr).Level(zerolog.InfoLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := node.RecoverRaft(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "cluster %s recovered: replica %d is now the only voter, state as of log index %d (%d keys); exported snapshot kept in %s\nstart the agent again; the autopilot adds live nodes of the cluster as voters\n",
		rep.Cluster, rep.Replica, rep.SnapshotIndex, rep.Keys, rep.ExportDir)
	return nil
}
