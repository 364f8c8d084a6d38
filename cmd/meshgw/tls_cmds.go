package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshgw/meshgw/transport/tlsutil"
)

func init() {
	extraCommandList = append(extraCommandList,
		command{"keygen", "print a new gossip encryption key", cmdKeygen},
	)
}

func contextTimeout(c *clientFlags) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return usageErr("keygen takes no arguments")
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
	return nil
}

// cmdTLS creates the cluster CA and node certificates:
//
//	meshgw tls ca create [-dir D] [-days N]
//	meshgw tls cert create -node NAME [-dir D] [-host H]... [-days N]
func cmdTLS(args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || args[1] != "create" || (args[0] != "ca" && args[0] != "cert") {
		return usageErr("usage: meshgw tls ca create [-dir D] | meshgw tls cert create -node NAME [-dir D] [-host H]")
	}
	fs := flag.NewFlagSet("meshgw tls "+args[0]+" create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory holding ca.pem and ca-key.pem, where new files are written")
	days := fs.Int("days", 3650, "validity in days")
	node := fs.String("node", "", "node name (the certificate's CN); cert only")
	var hosts multiFlag
	fs.Var(&hosts, "host", "extra DNS name or IP the certificate is valid for (repeatable); cert only")
	if err := fs.Parse(args[2:]); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("%s", oneLine(err))}
	}
	if *days < 1 {
		return usageErr("-days must be at least 1")
	}
	validity := time.Duration(*days) * 24 * time.Hour
	if args[0] == "ca" {
		certPEM, keyPEM, err := tlsutil.GenerateCA("meshgw cluster CA", validity)
		if err != nil {
			return err
		}
		cf, kf, err := tlsutil.WriteCAFiles(*dir, certPEM, keyPEM)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CA certificate: %s\nCA key:         %s (keep it off the nodes; it signs node certificates)\n", cf, kf)
		return nil
	}
	if *node == "" {
		return usageErr("tls cert create: -node NAME is required")
	}
	caPEM, err := os.ReadFile(filepath.Join(*dir, tlsutil.CAFile))
	if err != nil {
		return fmt.Errorf("read CA (run meshgw tls ca create first): %w", err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(*dir, tlsutil.CAKeyFile))
	if err != nil {
		return fmt.Errorf("read CA key: %w", err)
	}
	h := []string{"localhost", "127.0.0.1", "::1"}
	for _, x := range hosts {
		h = append(h, strings.Split(x, ",")...)
	}
	certPEM, keyPEM, err := tlsutil.GenerateCert(caPEM, caKeyPEM, *node, h, validity)
	if err != nil {
		return err
	}
	cf, kf, err := tlsutil.WriteCertFiles(*dir, *node, certPEM, keyPEM)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node certificate: %s\nnode key:         %s\nstart the agent with: -ca-file %s -cert-file %s -key-file %s\n",
		cf, kf, filepath.Join(*dir, tlsutil.CAFile), cf, kf)
	return nil
}
