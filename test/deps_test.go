package test

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/meshgw/meshgw"

type pkgInfo struct {
	ImportPath string
	Imports    []string
	Doc        string
	Name       string
}

func listPackages(t *testing.T) []pkgInfo {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []pkgInfo
	for {
		var p pkgInfo
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// top returns the top-level meshgw package of an import path ("" if not ours).
func top(path string) string {
	rest, ok := strings.CutPrefix(path, mod+"/")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(rest, "/")
	return first
}

// TestDependencyDirection holds the architecture's import rules:
// cmd → node → {dispatch, consensus, gossip, roles} → transport, nothing
// imports node (but cmd) or cmd, and the middle packages never import one
// another (roles imports none of ours).
func TestDependencyDirection(t *testing.T) {
	allowed := map[string]map[string]bool{
		"transport": {"transport": true},
		"gossip":    {"gossip": true},
		"consensus": {"consensus": true, "transport": true},
		"dispatch":  {"dispatch": true, "transport": true},
		"roles":     {"roles": true},
		"schedule":  {"schedule": true},
		"node": {"node": true, "gossip": true, "consensus": true, "dispatch": true, "transport": true,
			"roles": true, "schedule": true, "secretbox": true, "centrallog": true},
		"cmd":  {"cmd": true, "node": true, "transport": true}, // transport/tlsutil for `meshgw tls`
		"test": {"test": true, "transport": true},              // transport/tlsutil for the harness CA

		"secretbox": {"secretbox": true}, // encryption of secrets at rest
	}
	allowed["cache"] = map[string]bool{"cache": true, "transport": true} // the response cache
	allowed["node"]["cache"] = true
	allowed["centrallog"] = map[string]bool{"centrallog": true, "transport": true}             // the central log
	allowed["node"]["throttle"], allowed["throttle"] = true, map[string]bool{"throttle": true} // throttle imports none of ours
	for _, p := range listPackages(t) {
		from := top(p.ImportPath)
		for _, imp := range p.Imports {
			to := top(imp)
			if to == "" {
				continue
			}
			if !allowed[from][to] {
				t.Errorf("%s imports %s: %s may not depend on %s", p.ImportPath, imp, from, to)
			}
		}
	}
}

// TestEveryPackageHasADocComment: each package says what it owns.
func TestEveryPackageHasADocComment(t *testing.T) {
	for _, p := range listPackages(t) {
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment (doc.go)", p.ImportPath)
		}
	}
}

// TestDNSImportsNoMeshgwPackage: the DNS interface sees members through
// its own View interface, so it may not import node (or anything of ours).
func TestDNSImportsNoMeshgwPackage(t *testing.T) {
	for _, p := range listPackages(t) {
		if p.ImportPath != mod+"/node/dns" {
			continue
		}
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, mod+"/") {
				t.Errorf("%s imports %s", p.ImportPath, imp)
			}
		}
		return
	}
	t.Fatal("package node/dns not found")
}
