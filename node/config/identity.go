package config

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// IdentityFile is the file in the data dir that keeps the node's identity.
const IdentityFile = "node-id.json"

// Identity is what a node keeps across restarts: its name and a random ID
// that tells two incarnations of a data dir apart from a copy.
type Identity struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// TempDataDir reports whether the data dir was created for this run only
// (-dev without -data-dir) and should be removed at exit.
func (r *Runtime) TempDataDir() bool { return r.set["temp-data-dir"] }

// resolveDataDir picks the data dir and, when -node was not given, adopts
// the name kept there.
func (r *Runtime) resolveDataDir() error {
	if r.DataDir == "" {
		if r.Dev {
			dir, err := os.MkdirTemp("", "meshgw-dev-")
			if err != nil {
				return fmt.Errorf("-data-dir: create temporary dir: %w", err)
			}
			r.DataDir = dir
			r.set["temp-data-dir"] = true
			return nil
		}
		r.DataDir = DefaultDataDir(r.NodeName)
	}
	if !r.set["node"] {
		id, err := ReadIdentity(r.DataDir)
		if err == nil && id.Name != "" {
			r.NodeName = id.Name
		}
	}
	return nil
}

// ReadIdentity reads the identity kept in dir.
func ReadIdentity(dir string) (Identity, error) {
	var id Identity
	data, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		return id, err
	}
	if err := json.Unmarshal(data, &id); err != nil {
		return id, fmt.Errorf("%s: %w", filepath.Join(dir, IdentityFile), err)
	}
	return id, nil
}

// EnsureIdentity creates dir and its identity file on first start. A data
// dir that belongs to another node name is refused: two names sharing Raft
// data would corrupt both.
func EnsureIdentity(dir, name string) (Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Identity{}, fmt.Errorf("-data-dir %s cannot be used as the agent's data directory (%w): "+
			"give a directory path this agent's user can create and write", dir, err)
	}
	id, err := ReadIdentity(dir)
	switch {
	case err == nil:
		if id.Name != name {
			return id, fmt.Errorf("data dir %s belongs to node %q, not %q: use -node %s or another -data-dir", dir, id.Name, name, id.Name)
		}
		return id, nil
	case !errors.Is(err, fs.ErrNotExist):
		return id, err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return id, fmt.Errorf("node id: %w", err)
	}
	id = Identity{Name: name, ID: hex.EncodeToString(b[:])}
	data, _ := json.MarshalIndent(id, "", "  ")
	tmp := filepath.Join(dir, IdentityFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return id, fmt.Errorf("-data-dir %s is not writable (%w): give a directory this agent's user can write",
			dir, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, IdentityFile)); err != nil {
		return id, fmt.Errorf("write identity: %w", err)
	}
	return id, nil
}
