// A third-party verifier for Custos's audit log: Go's golang.org/x/mod/sumdb packages (the
// checksum database's own code), independent of Custos. note verifies the C2SP signed-note
// checkpoint with the Ed25519 verifier key; tlog recomputes the RFC 6962 tree head over the
// records and checks each inclusion proof. Reads {"vkey", "checkpoint", "records": [base64],
// "proofs": [{"index", "size", "hashes": [hex]}]} on stdin, prints a JSON verdict on stdout.
package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type proofIn struct {
	Index  int64    `json:"index"`
	Size   int64    `json:"size"`
	Hashes []string `json:"hashes"`
}

type input struct {
	VKey       string    `json:"vkey"`
	Checkpoint string    `json:"checkpoint"`
	Records    []string  `json:"records"`
	Proofs     []proofIn `json:"proofs"`
}

type verdict struct {
	SignatureOK  bool     `json:"signature_ok"`
	SignatureErr string   `json:"signature_error,omitempty"`
	Origin       string   `json:"origin"`
	Size         int64    `json:"size"`
	RootMatches  bool     `json:"root_matches"`
	ProofsOK     []bool   `json:"proofs_ok"`
	ProofErrors  []string `json:"proof_errors"`
}

func main() {
	var in input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	out := verdict{ProofsOK: []bool{}, ProofErrors: []string{}}
	v, err := note.NewVerifier(in.VKey)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad verifier key:", err)
		os.Exit(2)
	}
	n, err := note.Open([]byte(in.Checkpoint), note.VerifierList(v))
	if err != nil {
		out.SignatureErr = err.Error()
		_ = json.NewEncoder(os.Stdout).Encode(out)
		return
	}
	out.SignatureOK = true
	lines := strings.Split(strings.TrimSuffix(n.Text, "\n"), "\n")
	if len(lines) < 3 {
		fmt.Fprintln(os.Stderr, "checkpoint body has fewer than 3 lines")
		os.Exit(2)
	}
	out.Origin = lines[0]
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad size:", err)
		os.Exit(2)
	}
	out.Size = size
	rootRaw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(rootRaw) != tlog.HashSize {
		fmt.Fprintln(os.Stderr, "bad root hash")
		os.Exit(2)
	}
	var root tlog.Hash
	copy(root[:], rootRaw)

	// The tree as tlog stores it, built from the records themselves.
	var stored []tlog.Hash
	reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		hs := make([]tlog.Hash, len(idx))
		for i, j := range idx {
			if j < 0 || j >= int64(len(stored)) {
				return nil, fmt.Errorf("no stored hash %d", j)
			}
			hs[i] = stored[j]
		}
		return hs, nil
	})
	records := make([][]byte, len(in.Records))
	for i, r := range in.Records {
		data, err := base64.StdEncoding.DecodeString(r)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad record:", err)
			os.Exit(2)
		}
		records[i] = data
		hs, err := tlog.StoredHashes(int64(i), data, reader)
		if err != nil {
			fmt.Fprintln(os.Stderr, "stored hashes:", err)
			os.Exit(2)
		}
		stored = append(stored, hs...)
	}
	if size <= int64(len(records)) {
		th, err := tlog.TreeHash(size, reader)
		out.RootMatches = err == nil && th == root
	}
	for _, p := range in.Proofs {
		var proof tlog.RecordProof
		for _, h := range p.Hashes {
			raw, err := hex.DecodeString(h)
			if err != nil || len(raw) != tlog.HashSize {
				proof = nil
				break
			}
			var hh tlog.Hash
			copy(hh[:], raw)
			proof = append(proof, hh)
		}
		err := tlog.CheckRecord(proof, p.Size, root, p.Index, tlog.RecordHash(records[p.Index]))
		out.ProofsOK = append(out.ProofsOK, err == nil)
		if err != nil {
			out.ProofErrors = append(out.ProofErrors, err.Error())
		} else {
			out.ProofErrors = append(out.ProofErrors, "")
		}
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
}
