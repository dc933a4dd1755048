// A third-party verifier for Custos's signed messages: golang-jwt v5, the JWT library most Go
// services (and SSF receivers written in Go) use. Reads {"jwks": {...}, "tokens": [{"name",
// "token"}]} on stdin, verifies each compact JWS with the JWKS's Ed25519 key of its kid,
// allowing only EdDSA, and prints [{"name", "ok", "error", "claims"}] on stdout.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"

	"github.com/golang-jwt/jwt/v5"
)

type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
}

type input struct {
	JWKS struct {
		Keys []jwk `json:"keys"`
	} `json:"jwks"`
	Tokens []struct {
		Name  string `json:"name"`
		Token string `json:"token"`
	} `json:"tokens"`
}

type result struct {
	Name   string         `json:"name"`
	OK     bool           `json:"ok"`
	Error  string         `json:"error,omitempty"`
	Claims map[string]any `json:"claims,omitempty"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range in.JWKS.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			continue
		}
		keys[k.Kid] = ed25519.PublicKey(raw)
	}
	out := []result{}
	for _, t := range in.Tokens {
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(t.Token, claims, func(tok *jwt.Token) (any, error) {
			kid, _ := tok.Header["kid"].(string)
			key, found := keys[kid]
			if !found {
				return nil, fmt.Errorf("no key %q", kid)
			}
			return key, nil
		}, jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithoutClaimsValidation())
		r := result{Name: t.Name, OK: err == nil}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Claims = claims
		}
		out = append(out, r)
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
