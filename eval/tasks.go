package eval

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// maxLine bounds one line of a task file.
const maxLine = 1 << 20

// ReadHellaSwag reads tasks in llama.cpp's HellaSwag format: six lines per
// task (context, index of the right ending 0–3, four endings). At most limit
// tasks are read (0: all), in file order.
func ReadHellaSwag(r io.Reader, limit int) ([]Task, error) {
	sc := newScanner(r)
	var tasks []Task
	line := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		line++
		return strings.TrimSuffix(sc.Text(), "\r"), true
	}
	for limit <= 0 || len(tasks) < limit {
		ctxLine, ok := next()
		if !ok {
			break
		}
		t := Task{Context: ctxLine, Endings: make([]string, 4)}
		lbl, ok := next()
		if !ok {
			return nil, fmt.Errorf("eval: hellaswag line %d: task %d is cut short", line, len(tasks)+1)
		}
		n, err := strconv.Atoi(strings.TrimSpace(lbl))
		if err != nil || n < 0 || n > 3 {
			return nil, fmt.Errorf("eval: hellaswag line %d: label %q is not 0, 1, 2 or 3", line, lbl)
		}
		t.Label = n
		for e := range t.Endings {
			if t.Endings[e], ok = next(); !ok {
				return nil, fmt.Errorf("eval: hellaswag line %d: task %d is cut short", line, len(tasks)+1)
			}
		}
		tasks = append(tasks, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: hellaswag line %d: %w", line+1, err)
	}
	if len(tasks) == 0 {
		return nil, fmt.Errorf("eval: hellaswag: no tasks")
	}
	return tasks, nil
}

// piqaItem is one line of PIQA's valid.jsonl.
type piqaItem struct {
	Goal string `json:"goal"`
	Sol1 string `json:"sol1"`
	Sol2 string `json:"sol2"`
}

// ReadPIQA reads PIQA tasks: one JSON object per line of items (goal, sol1,
// sol2) and one label (0 or 1) per line of labels. At most limit tasks are
// read (0: all).
func ReadPIQA(items, labels io.Reader, limit int) ([]Task, error) {
	is, ls := newScanner(items), newScanner(labels)
	var tasks []Task
	for line := 1; limit <= 0 || len(tasks) < limit; line++ {
		if !is.Scan() {
			break
		}
		raw := bytes.TrimSpace(is.Bytes())
		if len(raw) == 0 {
			return nil, fmt.Errorf("eval: piqa line %d: empty", line)
		}
		var it piqaItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, fmt.Errorf("eval: piqa line %d: %w", line, err)
		}
		if !ls.Scan() {
			return nil, fmt.Errorf("eval: piqa labels: no label for item %d", line)
		}
		lbl := strings.TrimSpace(ls.Text())
		n, err := strconv.Atoi(lbl)
		if err != nil || n < 0 || n > 1 {
			return nil, fmt.Errorf("eval: piqa labels line %d: %q is not 0 or 1", line, lbl)
		}
		tasks = append(tasks, Task{Context: it.Goal, Endings: []string{it.Sol1, it.Sol2}, Label: n})
	}
	if err := is.Err(); err != nil {
		return nil, fmt.Errorf("eval: piqa: %w", err)
	}
	if err := ls.Err(); err != nil {
		return nil, fmt.Errorf("eval: piqa labels: %w", err)
	}
	if len(tasks) == 0 {
		return nil, fmt.Errorf("eval: piqa: no tasks")
	}
	return tasks, nil
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return sc
}

// LoadHellaSwag reads a HellaSwag file, bzip2-compressed or not.
func LoadHellaSwag(path string, limit int) ([]Task, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	r, err := maybeBzip2(f)
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	t, err := ReadHellaSwag(r, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// LoadPIQA reads PIQA's items and labels files.
func LoadPIQA(items, labels string, limit int) ([]Task, error) {
	fi, err := os.Open(items)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer fi.Close()
	fl, err := os.Open(labels)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer fl.Close()
	t, err := ReadPIQA(fi, fl, limit)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", items, err)
	}
	return t, nil
}

// PIQALabels is the labels file that goes with a PIQA items file:
// valid.jsonl → valid-labels.lst.
func PIQALabels(items string) string {
	return strings.TrimSuffix(items, ".jsonl") + "-labels.lst"
}

// maybeBzip2 returns a reader of r's content, decompressed when r starts
// with the bzip2 magic.
func maybeBzip2(r io.Reader) (io.Reader, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(3)
	if err != nil && err != io.EOF {
		return nil, err
	}
	if string(head) == "BZh" {
		return bzip2.NewReader(br), nil
	}
	return br, nil
}

// ReadText reads an evaluation text file.
func ReadText(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("eval: %w", err)
	}
	if len(b) == 0 {
		return "", fmt.Errorf("eval: %s is empty", path)
	}
	return string(b), nil
}
