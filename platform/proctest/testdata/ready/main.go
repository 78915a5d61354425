// Command ready serves /readyz on PROCTEST_ADDR, standing in for a service.
package main

import (
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {})
	log.Fatal(http.ListenAndServe(os.Getenv("PROCTEST_ADDR"), nil))
}
