package eval

import (
	"bytes"
	"compress/bzip2"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hellaswagTwo = "A man sits down. He\n2\nruns.\nflies.\nsmiles.\nsleeps.\nWomen dance. They\n0\nspin.\nsing.\ncook.\nread.\n"

func TestReadHellaSwag(t *testing.T) {
	tasks, err := ReadHellaSwag(strings.NewReader(hellaswagTwo), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 2 || tasks[0].Label != 2 || tasks[0].Endings[3] != "sleeps." || tasks[1].Context != "Women dance. They" {
		t.Errorf("%+v", tasks)
	}
	if one, _ := ReadHellaSwag(strings.NewReader(hellaswagTwo), 1); len(one) != 1 {
		t.Errorf("limit 1: %d tasks", len(one))
	}
	for _, bad := range []string{
		"",
		"ctx\n4\na\nb\nc\nd\n",
		"ctx\nx\na\nb\nc\nd\n",
		"ctx\n1\na\nb\n",
		"ctx\n",
	} {
		if _, err := ReadHellaSwag(strings.NewReader(bad), 0); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestReadPIQA(t *testing.T) {
	items := `{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Pull the lid."}
{"goal": "Dry a towel", "sol1": "Put it in water.", "sol2": "Hang it in the sun."}
`
	tasks, err := ReadPIQA(strings.NewReader(items), strings.NewReader("0\n1\n"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 2 || tasks[1].Label != 1 || tasks[1].Endings[1] != "Hang it in the sun." {
		t.Errorf("%+v", tasks)
	}
	for _, bad := range [][2]string{
		{items, "0\n"},
		{items, "0\n2\n"},
		{"{not json\n", "0\n"},
		{"\n", "0\n"},
		{"", ""},
	} {
		if _, err := ReadPIQA(strings.NewReader(bad[0]), strings.NewReader(bad[1]), 0); err == nil {
			t.Errorf("%q / %q: accepted", bad[0], bad[1])
		}
	}
}

// TestLoadHellaSwagBzip2 reads the real compressed set when it is present.
func TestLoadHellaSwagBzip2(t *testing.T) {
	path := filepath.Join("..", "..", "shared", "eval", "hellaswag", "hellaswag_val_full.txt.bz2")
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("%s is absent: %v", path, err)
	}
	f.Close()
	tasks, err := LoadHellaSwag(path, 5)
	if err != nil || len(tasks) != 5 {
		t.Fatalf("%v, %d tasks", err, len(tasks))
	}
	// Plain text reads the same.
	raw, _ := os.Open(path)
	defer raw.Close()
	var plain bytes.Buffer
	plain.ReadFrom(io.LimitReader(bzip2.NewReader(raw), 64<<10))
	again, err := ReadHellaSwag(&plain, 5)
	if err != nil || again[4].Context != tasks[4].Context {
		t.Errorf("plain and compressed differ: %v", err)
	}
}

func FuzzReadHellaSwag(f *testing.F) {
	f.Add([]byte(hellaswagTwo))
	f.Add([]byte("ctx\n3\n\n\n\n\n"))
	f.Add([]byte("BZh91AY&SY"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := maybeBzip2(bytes.NewReader(data))
		if err != nil {
			return
		}
		tasks, err := ReadHellaSwag(r, 0)
		if err != nil {
			return
		}
		for _, tk := range tasks {
			if len(tk.Endings) != 4 || tk.Label < 0 || tk.Label > 3 {
				t.Fatalf("bad task %+v", tk)
			}
		}
	})
}

func FuzzReadPIQA(f *testing.F) {
	f.Add([]byte(`{"goal": "g", "sol1": "a", "sol2": "b"}`), []byte("1\n"))
	f.Add([]byte("{}\n{}\n"), []byte("0\n1\n"))
	f.Fuzz(func(t *testing.T, items, labels []byte) {
		tasks, err := ReadPIQA(bytes.NewReader(items), bytes.NewReader(labels), 0)
		if err != nil {
			return
		}
		for _, tk := range tasks {
			if len(tk.Endings) != 2 || tk.Label < 0 || tk.Label > 1 {
				t.Fatalf("bad task %+v", tk)
			}
		}
	})
}
