package tsgen

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

type Color string

const (
	Red  Color = "red"
	Blue Color = "blue"
)

type Shade string // no constants: not an enum

type Basic struct {
	Name    string         `json:"name"`
	Nick    string         `json:"nick,omitempty"`
	Count   int64          `json:"count"`
	Ratio   float64        `json:"ratio,omitempty"`
	OK      bool           `json:"ok"`
	When    time.Time      `json:"when"`
	Seen    time.Time      `json:"seen,omitzero"`
	Tags    []string       `json:"tags"`
	Labels  map[string]int `json:"labels"`
	Addr    netip.Addr     `json:"addr"`
	ID      int            `json:"id,string"`
	Raw     []byte         `json:"raw"`
	Any     any            `json:"any"`
	Skipped string         `json:"-"`
	hidden  string
	NoTag   string
}

// An unexported field is not JSON: this use keeps it from being unused.
var _ = Basic{hidden: "x"}

type Inner struct {
	Color Color `json:"color"`
}

type Outer struct {
	Inner  Inner           `json:"inner"`
	Ptr    *Inner          `json:"ptr"`
	OptPtr *Inner          `json:"optPtr,omitempty"`
	List   []*Inner        `json:"list"`
	ByKey  map[Color]Inner `json:"byKey"`
	Anon   struct {
		X int `json:"x"`
	} `json:"anon"`
}

type Common struct {
	Seq int `json:"seq"`
}

type Embeds struct {
	Common
	More string `json:"more"`
}

type Shape struct {
	Kind   Color   `json:"kind" tsunion:"red=RedShape,blue=BlueShape"`
	Size   int     `json:"size"`
	Fire   string  `json:"fire,omitempty" tskind:"red"`
	Water  float64 `json:"water" tskind:"blue"`
	Wetter bool    `json:"wetter,omitempty" tskind:"blue"`
}

type BadUnionValue struct {
	Kind Color `json:"kind" tsunion:"red=R,green=G"`
}

type MissingMember struct {
	Kind Color `json:"kind" tsunion:"red=R"`
}

type BadKind struct {
	Kind Color  `json:"kind" tsunion:"red=R,blue=B"`
	X    string `json:"x" tskind:"green"`
}

type Twice struct {
	A string // named A in JSON
	B string `json:"A"`
}

type NoValues struct {
	S Shade `json:"s"`
}

type Documented struct {
	A int    `json:"a"`
	B string `json:"b"`
}

type Self struct{}

func (Self) MarshalJSON() ([]byte, error) { return []byte("1"), nil }

type SelfField struct {
	S Self `json:"s"`
}

func TestGenerate(t *testing.T) {
	enums := map[string][]string{"Color": {"red", "blue"}}
	docs := map[string]string{"Documented": "Documented says why.\nOn two lines.", "Documented.A": "A is a.", "Documented.B": "the b"}
	tests := []struct {
		name    string
		roots   []reflect.Type
		want    string
		wantErr string
	}{
		{
			name:  "basic",
			roots: []reflect.Type{reflect.TypeFor[Basic]()},
			want: `export interface Basic {
  name: string;
  nick?: string;
  count: number;
  ratio?: number;
  ok: boolean;
  when: string;
  seen?: string;
  tags: string[];
  labels: Record<string, number>;
  addr: string;
  id: string;
  raw: string;
  any: unknown;
  NoTag: string;
}
`,
		},
		{
			name:  "enum",
			roots: []reflect.Type{reflect.TypeFor[Color]()},
			want:  "export type Color = \"red\" | \"blue\";\nexport const ColorValues: readonly Color[] = [\"red\", \"blue\"];\n",
		},
		{
			name:  "nested",
			roots: []reflect.Type{reflect.TypeFor[Outer]()},
			want: `export interface Outer {
  inner: Inner;
  ptr: Inner | null;
  optPtr?: Inner;
  list: (Inner | null)[];
  byKey: Partial<Record<Color, Inner>>;
  anon: { x: number; };
}

export interface Inner {
  color: Color;
}

export type Color = "red" | "blue";
export const ColorValues: readonly Color[] = ["red", "blue"];
`,
		},
		{
			name:  "embedded",
			roots: []reflect.Type{reflect.TypeFor[Embeds]()},
			want: `export interface Embeds {
  seq: number;
  more: string;
}
`,
		},
		{
			name:  "union",
			roots: []reflect.Type{reflect.TypeFor[Shape]()},
			want: `// ShapeBase holds the fields every Shape has.
export interface ShapeBase {
  size: number;
}

// RedShape is a Shape of kind "red".
export interface RedShape extends ShapeBase {
  kind: "red";
  fire?: string;
  water?: never;
  wetter?: never;
}

// BlueShape is a Shape of kind "blue".
export interface BlueShape extends ShapeBase {
  kind: "blue";
  water: number;
  wetter?: boolean;
  fire?: never;
}

export type Shape = RedShape | BlueShape;

export type Color = "red" | "blue";
export const ColorValues: readonly Color[] = ["red", "blue"];
`,
		},
		{
			name:  "comments",
			roots: []reflect.Type{reflect.TypeFor[Documented]()},
			want: `// Documented says why.
// On two lines.
export interface Documented {
  // A is a.
  a: number;
  // the b
  b: string;
}
`,
		},
		{name: "union value not in enum", roots: []reflect.Type{reflect.TypeFor[BadUnionValue]()}, wantErr: `tsunion "green=G"`},
		{name: "union member missing", roots: []reflect.Type{reflect.TypeFor[MissingMember]()}, wantErr: "want one member for each of red, blue"},
		{name: "kind not in enum", roots: []reflect.Type{reflect.TypeFor[BadKind]()}, wantErr: `tskind "green"`},
		{name: "name used twice", roots: []reflect.Type{reflect.TypeFor[Twice]()}, wantErr: `JSON name "A" used twice`},
		{name: "string type without constants", roots: []reflect.Type{reflect.TypeFor[NoValues]()}, wantErr: "Shade: type tsgen.Shade: want a string type with constants"},
		{name: "custom marshaler", roots: []reflect.Type{reflect.TypeFor[SelfField]()}, wantErr: "marshals itself"},
		{name: "unnamed root", roots: []reflect.Type{reflect.TypeFor[[]Basic]()}, wantErr: "not a named type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Generator{Enums: enums, Docs: docs, EnumPkg: reflect.TypeFor[Color]().PkgPath()}
			got, err := g.Generate(tt.roots...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestReadSource(t *testing.T) {
	dir := t.TempDir()
	src := `package x

// Kind is a kind.
type Kind string

const (
	A Kind = "a"
	B Kind = "b"
	untyped = "u"
	N int = 1
)

const C Kind = "c"

type (
	// T is a thing.
	T struct {
		// X is the first.
		X, Y int
		Z string // the last
		W bool
	}
)
`
	for name, text := range map[string]string{"x.go": src, "x_test.go": "package x\n\nconst T Kind = \"t\"\n"} {
		if err := os.WriteFile(dir+"/"+name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := &Source{
		Enums: map[string][]string{"Kind": {"a", "b", "c"}},
		Docs:  map[string]string{"Kind": "Kind is a kind.", "T": "T is a thing.", "T.X": "X is the first.", "T.Y": "X is the first.", "T.Z": "the last"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadSource = %+v, want %+v", got, want)
	}
}
