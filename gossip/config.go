package gossip

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// Config configures one gossip member. Every field has a working default
// in DefaultConfig except NodeName.
type Config struct {
	// NodeName is the member's unique name in the mesh.
	NodeName string
	// BindAddr is the host:port gossip listens on, TCP and UDP.
	BindAddr string
	// AdvertiseAddr is the host[:port] peers use to reach this member;
	// empty: memberlist picks (the bind IP, or a private IP for 0.0.0.0).
	AdvertiseAddr string
	// Profile picks the failure-detection timings: "lan" (default), "local"
	// (one host, tests), "wan".
	Profile string

	// Cluster, Roles, RPCAddr, RaftAddr, HTTPAddr, Version and UserTags are
	// gossiped as tags so peers know what this member serves and where.
	Cluster  string
	Roles    []string
	RPCAddr  string
	RaftAddr string
	HTTPAddr string
	Version  string
	UserTags map[string]string

	// Join lists seeds contacted by Start; failing to reach all is an error.
	Join []string
	// RetryJoin lists seeds retried in the background until one answers,
	// waiting RetryInterval, doubling up to RetryMaxInterval.
	RetryJoin        []string
	RetryInterval    time.Duration
	RetryMaxInterval time.Duration
	// RetryMax bounds retry-join attempts; 0 retries forever.
	RetryMax int

	// EncryptKey (16, 24 or 32 bytes) encrypts gossip. KeyringFile keeps the
	// installed keys across restarts (written on first start from
	// EncryptKey, and on every key rotation); when it exists it wins.
	EncryptKey  []byte
	KeyringFile string
	// SnapshotPath persists the member list so a restarted node rejoins its
	// previous peers without -join.
	SnapshotPath string

	// ReconnectTimeout is how long a failed member is remembered (and
	// retried) before it is reaped; TombstoneTimeout the same for left ones.
	ReconnectTimeout time.Duration
	TombstoneTimeout time.Duration
	// LeavePropagateDelay is how long Leave waits for the leave to spread.
	LeavePropagateDelay time.Duration
	// EventBuffer is the capacity of the Events channel.
	EventBuffer int
}

// DefaultConfig returns a config for the lan profile on the default port.
func DefaultConfig() Config {
	return Config{
		BindAddr:            "0.0.0.0:7946",
		Profile:             "lan",
		Cluster:             "default",
		Roles:               []string{"gateway", "runner"},
		RetryInterval:       time.Second,
		RetryMaxInterval:    15 * time.Second,
		ReconnectTimeout:    72 * time.Hour,
		TombstoneTimeout:    24 * time.Hour,
		LeavePropagateDelay: time.Second,
		EventBuffer:         256,
	}
}

// Tag keys: short, because all tags share memberlist's 512-byte meta limit.
const (
	tagCluster = "c"
	tagRoles   = "r"
	tagRPC     = "rpc"
	tagRaft    = "raft"
	tagHTTP    = "http"
	tagVersion = "v"
	// tagHosting is set ("1") while the member hosts a replica of its
	// cluster's Raft group (SetHosting); absent otherwise.
	tagHosting = "h"
	userPrefix = "t."
)

// maxMeta is memberlist's limit on a node's encoded metadata.
const maxMeta = memberlist.MetaMaxSize

// Validate reports the first problem, naming the field.
func (c Config) Validate() error {
	if c.NodeName == "" {
		return errors.New("gossip: NodeName is required")
	}
	if _, _, err := net.SplitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("gossip: BindAddr %q: %w", c.BindAddr, err)
	}
	switch c.Profile {
	case "lan", "local", "wan":
	default:
		return fmt.Errorf("gossip: Profile %q: want lan, local or wan", c.Profile)
	}
	if c.Cluster == "" {
		return errors.New("gossip: Cluster is required")
	}
	for k := range c.UserTags {
		if k == "" || strings.ContainsAny(k, "=,") {
			return fmt.Errorf("gossip: user tag key %q is empty or contains '=' or ','", k)
		}
	}
	if n := len(c.EncryptKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("gossip: EncryptKey is %d bytes; want 16, 24 or 32", n)
	}
	if c.RetryInterval <= 0 || c.RetryMaxInterval < c.RetryInterval {
		return fmt.Errorf("gossip: RetryInterval %s / RetryMaxInterval %s must be positive and ordered", c.RetryInterval, c.RetryMaxInterval)
	}
	if c.EventBuffer < 1 {
		return errors.New("gossip: EventBuffer must be at least 1")
	}
	// Sized with the hosting tag, which SetHosting may add at any time.
	if n := encodedSize(c.tags(true)); n > maxMeta {
		return fmt.Errorf("gossip: tags encode to %d bytes, more than the %d memberlist allows: shorten user tags", n, maxMeta)
	}
	return nil
}

// tags encodes the member's tags.
func (c Config) tags(hosting bool) map[string]string {
	t := map[string]string{
		tagCluster: c.Cluster,
		tagRoles:   strings.Join(c.Roles, ","),
	}
	if hosting {
		t[tagHosting] = "1"
	}
	for k, v := range map[string]string{tagRPC: c.RPCAddr, tagRaft: c.RaftAddr, tagHTTP: c.HTTPAddr, tagVersion: c.Version} {
		if v != "" {
			t[k] = v
		}
	}
	for k, v := range c.UserTags {
		t[userPrefix+k] = v
	}
	return t
}

// encodedSize is the exact size of serf's tag encoding: a magic byte then
// the msgpack map (serf.encodeTags), which is what memberlist's meta limit
// applies to.
func encodedSize(t map[string]string) int {
	var buf bytes.Buffer
	buf.WriteByte(0xff) // serf's tagMagicByte
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(t); err != nil {
		return maxMeta + 1 // cannot happen for a map of strings; refuse rather than panic later
	}
	return buf.Len()
}

func decodeTags(t map[string]string, m *Member) {
	m.Cluster = t[tagCluster]
	if r := t[tagRoles]; r != "" {
		m.Roles = strings.Split(r, ",")
	} else {
		m.Roles = []string{}
	}
	m.RPCAddr, m.RaftAddr, m.HTTPAddr, m.Version = t[tagRPC], t[tagRaft], t[tagHTTP], t[tagVersion]
	m.Hosting = t[tagHosting] == "1"
	m.Tags = map[string]string{}
	for k, v := range t {
		if uk, ok := strings.CutPrefix(k, userPrefix); ok {
			m.Tags[uk] = v
		}
	}
}

// reconnectInterval is how often serf retries a failed member, by profile.
// Serf's default is 30 s: after a partition heals, the two sides would
// stay apart that long (and Raft traffic with them). A retry is one TCP
// push-pull to one failed member, so a few seconds cost nothing.
func reconnectInterval(profile string) time.Duration {
	switch profile {
	case "local":
		return 2 * time.Second
	case "wan":
		return 30 * time.Second
	default:
		return 5 * time.Second
	}
}

// profileConfig returns memberlist's base config for a profile, tuned.
//
// lan: serf's defaults (probe 1 s, suspicion >= 4 s) take 5-7 s to declare a
// killed node failed. We probe every 300 ms with a 250 ms ack timeout and a
// suspicion multiplier of 3, so the minimum suspicion is 3 x 300 ms = 0.9 s
// up to 10 members, growing with log10 of the size (1.5 s at 50), and the
// maximum, used until peers confirm the suspicion, 4 x that. Lifeguard keeps
// this safe when the machine is slow: a node that misses its own acks raises
// its awareness score and stretches its probe timeouts (AwarenessMaxMultiplier
// 8: up to 2 s), and a suspicion must be confirmed by SuspicionMult-2 = 1
// other node before the timeout shrinks below the maximum. Gossip every
// 100 ms to 4 nodes with RetransmitMult 4 spreads a suspicion and its
// confirmations within a few hundred ms.
// Measured (BENCHMARKS.md): kill -9 seen failed by every survivor after
// 1.5 s at 5 members, 1.9 s at 20 and 2.4 s at 50 (serf's defaults: 6.0,
// 8.5 and 11 s); under 30 s of both CPUs saturated by busy processes no
// member was ever reported failed, nor even suspect.
//
// local: for one host (tests): faster still, RetransmitMult 4 (memberlist's
// local default of 2 sometimes missed a node until the 15 s push/pull).
//
// wan: memberlist's WAN defaults.
func profileConfig(profile string) *memberlist.Config {
	switch profile {
	case "local":
		mc := memberlist.DefaultLocalConfig()
		mc.RetransmitMult = 4
		mc.ProbeInterval = 300 * time.Millisecond
		mc.ProbeTimeout = 200 * time.Millisecond
		mc.SuspicionMult = 4
		mc.SuspicionMaxTimeoutMult = 4
		mc.GossipInterval = 50 * time.Millisecond
		mc.GossipNodes = 4
		mc.PushPullInterval = 5 * time.Second
		return mc
	case "wan":
		return memberlist.DefaultWANConfig()
	default:
		mc := memberlist.DefaultLANConfig()
		mc.ProbeInterval = 300 * time.Millisecond
		mc.ProbeTimeout = 250 * time.Millisecond
		mc.SuspicionMult = 3
		mc.SuspicionMaxTimeoutMult = 4
		mc.AwarenessMaxMultiplier = 8
		mc.GossipInterval = 100 * time.Millisecond
		mc.GossipNodes = 4
		mc.RetransmitMult = 4
		return mc
	}
}

// GenerateKey returns a new random 32-byte gossip key, base64 encoded.
func GenerateKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// DecodeKey decodes a base64 gossip key and checks its length.
func DecodeKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("gossip key: not base64: %w", err)
	}
	if n := len(b); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("gossip key: %d bytes, want 16, 24 or 32", n)
	}
	return b, nil
}

// KeyResponse is the mesh's answer to a keyring operation.
type KeyResponse struct {
	NumNodes int               `json:"num_nodes"`
	NumResp  int               `json:"num_resp"`
	NumErr   int               `json:"num_err"`
	Messages map[string]string `json:"messages,omitempty"` // node → error
	Keys     map[string]int    `json:"keys,omitempty"`     // key → nodes holding it
	Primary  map[string]int    `json:"primary,omitempty"`  // primary key → nodes using it
}

// keyOp runs a serf key manager operation across the live mesh.
func (g *Gossip) keyOp(op string, f func(*serf.KeyManager) (*serf.KeyResponse, error)) (KeyResponse, error) {
	s := g.sp.Load()
	if s == nil {
		return KeyResponse{}, errors.New("gossip: not started")
	}
	if !g.Encrypted() {
		return KeyResponse{}, errors.New("gossip: encryption is not enabled on this node (start it with -encrypt)")
	}
	kr, err := f(s.KeyManager())
	var res KeyResponse
	if kr != nil {
		res = KeyResponse{NumNodes: kr.NumNodes, NumResp: kr.NumResp, NumErr: kr.NumErr,
			Messages: kr.Messages, Keys: kr.Keys, Primary: kr.PrimaryKeys}
	}
	if err != nil {
		return res, fmt.Errorf("keyring %s: %w", op, err)
	}
	return res, nil
}

// ListKeys lists the keys installed across the mesh.
func (g *Gossip) ListKeys() (KeyResponse, error) {
	return g.keyOp("list", (*serf.KeyManager).ListKeys)
}

// InstallKey installs key on every live member.
func (g *Gossip) InstallKey(key string) (KeyResponse, error) {
	if _, err := DecodeKey(key); err != nil {
		return KeyResponse{}, err
	}
	return g.keyOp("install", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.InstallKey(key) })
}

// UseKey makes key the primary (encrypting) key on every live member.
func (g *Gossip) UseKey(key string) (KeyResponse, error) {
	return g.keyOp("use", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.UseKey(key) })
}

// RemoveKey removes key from every live member.
func (g *Gossip) RemoveKey(key string) (KeyResponse, error) {
	return g.keyOp("remove", func(k *serf.KeyManager) (*serf.KeyResponse, error) { return k.RemoveKey(key) })
}
