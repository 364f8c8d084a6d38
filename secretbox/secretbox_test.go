package secretbox

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func mustKey(t *testing.T) []byte {
	t.Helper()
	s, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, _ := base64.StdEncoding.DecodeString(s)
	return k
}

func TestSealOpen(t *testing.T) {
	k1, k2 := mustKey(t), mustKey(t)
	kr, err := NewKeyring(k1)
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("default/db-pass")
	sealed, err := kr.Seal([]byte("hunter22"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("hunter22")) {
		t.Fatal("plaintext visible in the sealed value")
	}
	again, _ := kr.Seal([]byte("hunter22"), ad)
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one value are equal: nonce reused")
	}
	pt, err := kr.Open(sealed, ad)
	if err != nil || string(pt) != "hunter22" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := kr.Open(sealed, []byte("default/other")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("moved value opened: %v", err)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := kr.Open(bad, ad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered value opened: %v", err)
	}
	if _, err := kr.Open([]byte("garbage"), ad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	// Rotation: the new key seals, the old one still opens.
	rot, _ := NewKeyring(k2, k1)
	if pt, err := rot.Open(sealed, ad); err != nil || string(pt) != "hunter22" {
		t.Fatalf("old value after rotation: %q %v", pt, err)
	}
	s2, _ := rot.Seal([]byte("v2"), ad)
	if KeyIDOf(s2) != rot.PrimaryID() || KeyIDOf(s2) == kr.PrimaryID() {
		t.Fatal("rotated keyring does not seal with its first key")
	}
	if _, err := kr.Open(s2, ad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("value of an unknown key: %v", err)
	}
}

func TestDeriveKey(t *testing.T) {
	g := bytes.Repeat([]byte{7}, 32)
	a, err := DeriveKey(g)
	if err != nil || len(a) != KeySize {
		t.Fatal(a, err)
	}
	b, _ := DeriveKey(g)
	if !bytes.Equal(a, b) || bytes.Equal(a, g) {
		t.Fatal("derivation not deterministic, or the secret used as is")
	}
	if _, err := DeriveKey([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestParseKeyFile(t *testing.T) {
	k1, _ := GenerateKey()
	k2, _ := GenerateKey()
	keys, err := ParseKeyFile([]byte("# current\n" + k1 + "\n\n" + k2 + "\n"))
	if err != nil || len(keys) != 2 {
		t.Fatal(keys, err)
	}
	for _, bad := range []string{"", "# only a comment\n", "bm90IGEga2V5\n", "secret-looking-line"} {
		_, err := ParseKeyFile([]byte(bad))
		if err == nil {
			t.Fatalf("%q accepted", bad)
		}
		if strings.Contains(err.Error(), "secret-looking") {
			t.Fatalf("error repeats the file's content: %v", err)
		}
	}
	if _, err := NewKeyring([]byte("short")); err == nil {
		t.Fatal("short key accepted")
	}
}
