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
		command{name: "keygen", summary: "print a new gossip encryption key", run: cmdKeygen,
			desc: "Print a new random 32-byte gossip encryption key, base64: the value of the " +
				"agent's -encrypt and of meshgw keyring -install."},
	)
}

func contextTimeout(c *clientFlags) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}

func cmdKeygen(args []string, stdout, stderr io.Writer) error {
	if _, err := parseArgs(newFlags("keygen"), args); err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
	return nil
}

// tlsFlags are the flags of tls ca create and tls cert create.
type tlsFlags struct {
	fs    *flag.FlagSet
	dir   *string
	days  *int
	node  *string
	hosts multiFlag
}

func newTLSFlags(name string, cert bool) *tlsFlags {
	f := &tlsFlags{fs: newFlags(name)}
	f.dir = f.fs.String("dir", ".", "directory holding ca.pem and ca-key.pem, where new files are written")
	f.days = f.fs.Int("days", 3650, "validity in days")
	if cert {
		f.node = f.fs.String("node", "", "node name, the certificate's CN (required)")
		f.fs.Var(&f.hosts, "host", "extra DNS name or IP the certificate is valid for (repeatable)")
	}
	return f
}

func (f *tlsFlags) parse(args []string) (time.Duration, error) {
	if _, err := parseArgs(f.fs, args); err != nil {
		return 0, err
	}
	if *f.days < 1 {
		return 0, usageErr("-days %d: want at least 1", *f.days)
	}
	return time.Duration(*f.days) * 24 * time.Hour, nil
}

func cmdTLSCACreate(args []string, stdout, stderr io.Writer) error {
	f := newTLSFlags("tls ca create", false)
	validity, err := f.parse(args)
	if err != nil {
		return err
	}
	certPEM, keyPEM, err := tlsutil.GenerateCA("meshgw cluster CA", validity)
	if err != nil {
		return err
	}
	cf, kf, err := tlsutil.WriteCAFiles(*f.dir, certPEM, keyPEM)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "CA certificate: %s\nCA key:         %s (keep it off the nodes; it signs node certificates)\n", cf, kf)
	return nil
}

func cmdTLSCertCreate(args []string, stdout, stderr io.Writer) error {
	f := newTLSFlags("tls cert create", true)
	validity, err := f.parse(args)
	if err != nil {
		return err
	}
	if *f.node == "" {
		return usageErr("-node NAME is required")
	}
	caPEM, err := os.ReadFile(filepath.Join(*f.dir, tlsutil.CAFile))
	if err != nil {
		return fmt.Errorf("read the CA (run meshgw tls ca create first): %w", err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(*f.dir, tlsutil.CAKeyFile))
	if err != nil {
		return fmt.Errorf("read the CA key: %w", err)
	}
	h := []string{"localhost", "127.0.0.1", "::1"}
	for _, x := range f.hosts {
		h = append(h, strings.Split(x, ",")...)
	}
	certPEM, keyPEM, err := tlsutil.GenerateCert(caPEM, caKeyPEM, *f.node, h, validity)
	if err != nil {
		return err
	}
	cf, kf, err := tlsutil.WriteCertFiles(*f.dir, *f.node, certPEM, keyPEM)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node certificate: %s\nnode key:         %s\nstart the agent with: -ca-file %s -cert-file %s -key-file %s\n",
		cf, kf, filepath.Join(*f.dir, tlsutil.CAFile), cf, kf)
	return nil
}
