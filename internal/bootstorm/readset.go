package bootstorm

import (
	"bufio"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
)

// recordedReadSet is the shared-root boot read set recorded from a real
// node's boot by scripts/record-readset: "bytes<TAB>path" lines after "#"
// comments that say when and from which ISO.
//
//go:embed readset.tsv
var recordedReadSet string

// ReadSet is what a shared-root node reads from node1's NFS export while
// it boots to its login prompt.
type ReadSet struct {
	// Files is each file's path in the export and the bytes of it read.
	Files map[string]int64
	// Bytes is their sum.
	Bytes int64
	// Source is the file's comment lines: when, how and from what it was
	// recorded.
	Source []string
}

// RecordedReadSet parses the read set kept in the repository.
func RecordedReadSet() (ReadSet, error) { return ParseReadSet(recordedReadSet) }

// ParseReadSet parses a read set in scripts/record-readset's format. An
// error names the line that is not "bytes<whitespace>path" with a count of
// zero or more, or a path given twice.
func ParseReadSet(text string) (ReadSet, error) {
	rs := ReadSet{Files: map[string]int64{}}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if c, ok := strings.CutPrefix(line, "#"); ok {
			rs.Source = append(rs.Source, strings.TrimSpace(c))
			continue
		}
		count, path, ok := strings.Cut(line, "\t")
		if !ok {
			count, path, ok = strings.Cut(line, " ")
		}
		path = strings.TrimSpace(path)
		b, err := strconv.ParseInt(strings.TrimSpace(count), 10, 64)
		if !ok || err != nil || b < 0 || !strings.HasPrefix(path, "/") {
			return ReadSet{}, fmt.Errorf("read set line %d: %q: want bytes, a tab and an absolute path", n, line)
		}
		if _, dup := rs.Files[path]; dup {
			return ReadSet{}, fmt.Errorf("read set line %d: %s is listed twice", n, path)
		}
		rs.Files[path] = b
		rs.Bytes += b
	}
	if err := sc.Err(); err != nil {
		return ReadSet{}, err
	}
	if len(rs.Files) == 0 {
		return ReadSet{}, fmt.Errorf("read set: no files")
	}
	return rs, nil
}
