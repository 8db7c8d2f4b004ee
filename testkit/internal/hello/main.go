// The hello command prints its arguments; testkit's tests build it with BuildOnce.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	fmt.Println("hello", strings.Join(os.Args[1:], " "))
}
