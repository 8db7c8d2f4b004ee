package testca

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestIssueVerifiesAgainstPool(t *testing.T) {
	ca := New(t, "testca test")
	crt, key := ca.Issue(t, 7, "a.example.test", "b.example.test")
	if _, err := tls.X509KeyPair(crt, key); err != nil {
		t.Fatalf("pair: %v", err)
	}
	blk, _ := pem.Decode(crt)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.example.test", "b.example.test"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "c.example.test", Roots: ca.Pool}); err == nil {
		t.Error("verified for a name it was not issued for")
	}
	other := New(t, "another CA")
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "a.example.test", Roots: other.Pool}); err == nil {
		t.Error("verified against another CA")
	}
}
