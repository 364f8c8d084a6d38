package secretbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

// MaxKeys bounds a keyring (and a key file).
const MaxKeys = 16

const (
	magic     = "msb1"
	idLen     = 8
	nonceLen  = 12
	headerLen = len(magic) + idLen + nonceLen
)

// Errors Open returns; callers classify with errors.Is.
var (
	// ErrUnknownKey: the value was sealed with a key this keyring lacks
	// (rotated away, or another cluster secret).
	ErrUnknownKey = errors.New("secretbox: sealed with a key this node does not hold")
	// ErrCorrupt: the value is not a sealed value, or it does not
	// authenticate (tampered, or stored under another name).
	ErrCorrupt = errors.New("secretbox: sealed value is corrupt or was moved")
)

// Keyring holds the keys: the first seals, every one opens.
type Keyring struct {
	keys []key
}

type key struct {
	id   [idLen]byte
	aead cipher.AEAD
}

// NewKeyring builds a keyring from raw 32-byte keys, the sealing key first.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("secretbox: no key")
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("secretbox: %d keys, at most %d", len(keys), MaxKeys)
	}
	kr := &Keyring{}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("secretbox: key %d is %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("secretbox: key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secretbox: key %d: %w", i+1, err)
		}
		kr.keys = append(kr.keys, key{id: keyID(k), aead: aead})
	}
	return kr, nil
}

// keyID names a key without revealing it.
func keyID(k []byte) [idLen]byte {
	h := sha256.New()
	h.Write([]byte("meshgw secretbox key id\x00"))
	h.Write(k)
	var id [idLen]byte
	copy(id[:], h.Sum(nil))
	return id
}

// PrimaryID is the hex ID of the sealing key (safe to show).
func (kr *Keyring) PrimaryID() string { return hex.EncodeToString(kr.keys[0].id[:]) }

// Seal encrypts plaintext with the first key, bound to ad.
func (kr *Keyring) Seal(plaintext, ad []byte) ([]byte, error) {
	k := kr.keys[0]
	out := make([]byte, headerLen, headerLen+len(plaintext)+k.aead.Overhead())
	copy(out, magic)
	copy(out[len(magic):], k.id[:])
	nonce := out[len(magic)+idLen : headerLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secretbox: nonce: %w", err)
	}
	return k.aead.Seal(out, nonce, plaintext, ad), nil
}

// KeyIDOf returns the hex ID of the key a sealed value needs, or "" if
// sealed is not a sealed value.
func KeyIDOf(sealed []byte) string {
	if len(sealed) < headerLen || string(sealed[:len(magic)]) != magic {
		return ""
	}
	return hex.EncodeToString(sealed[len(magic) : len(magic)+idLen])
}

// Open decrypts a value sealed with any key of the keyring under ad.
func (kr *Keyring) Open(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < headerLen || string(sealed[:len(magic)]) != magic {
		return nil, ErrCorrupt
	}
	id := sealed[len(magic) : len(magic)+idLen]
	for _, k := range kr.keys {
		if !bytes.Equal(k.id[:], id) {
			continue
		}
		pt, err := k.aead.Open(nil, sealed[len(magic)+idLen:headerLen], sealed[headerLen:], ad)
		if err != nil {
			return nil, ErrCorrupt
		}
		return pt, nil
	}
	return nil, fmt.Errorf("%w (key %s)", ErrUnknownKey, hex.EncodeToString(id))
}

// DeriveKey derives a secrets key from a cluster secret (the gossip
// encryption key) with HKDF-SHA256: the secret itself is never used as
// the secrets key, so the two uses cannot be confused.
func DeriveKey(secret []byte) ([]byte, error) {
	if len(secret) < 16 {
		return nil, errors.New("secretbox: cluster secret shorter than 16 bytes")
	}
	return hkdf.Key(sha256.New, secret, []byte("meshgw secretbox salt v1"), "meshgw secrets at rest v1", KeySize)
}

// GenerateKey returns a new random key, base64 (the key file's format).
func GenerateKey() (string, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k), nil
}

// MaxKeyFileSize bounds a key file.
const MaxKeyFileSize = 8 << 10

// ParseKeyFile reads a key file: one base64 32-byte key per line, the
// sealing key first; blank lines and lines starting with '#' are skipped.
// Errors name the line, never its content.
func ParseKeyFile(data []byte) ([][]byte, error) {
	if len(data) > MaxKeyFileSize {
		return nil, fmt.Errorf("key file is %d bytes, more than %d", len(data), MaxKeyFileSize)
	}
	var keys [][]byte
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(k) != KeySize {
			return nil, fmt.Errorf("key file line %d: not a base64 %d-byte key (make one with `meshgw secrets keygen`)", i+1, KeySize)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("key file holds no key (make one with `meshgw secrets keygen`)")
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("key file holds %d keys, at most %d", len(keys), MaxKeys)
	}
	return keys, nil
}
