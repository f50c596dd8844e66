package daemon

import (
	"fmt"
	"os"
	"syscall"
)

// fileID is f's "device:inode", as JOURNAL_STREAM writes it ("" when f
// cannot be examined).
func fileID(f *os.File) string {
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
