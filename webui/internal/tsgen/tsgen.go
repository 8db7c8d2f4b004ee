// Package tsgen writes TypeScript declarations of Go types as encoding/json marshals them.
package tsgen

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Struct tags that make a struct a TypeScript union by one of its fields.
// The discriminant carries TagUnion, listing every value of its string
// enum with the name of the union member it makes
// (`tsunion:"ping=PingResult,dns=DNSResult"`); a field that only one
// member carries says which with TagKind (`tskind:"ping"`). Fields without
// TagKind are common to every member.
const (
	TagUnion = "tsunion"
	TagKind  = "tskind"
)

// Generator turns Go types into TypeScript declarations. It is not safe
// for concurrent use.
type Generator struct {
	// Enums holds the values of the string enum types (a defined type
	// whose underlying type is string), by type name, in declaration
	// order. A string type of an enum package without an entry is an
	// error: its constants would be missing from the union.
	Enums map[string][]string
	// Docs holds comments to carry over, by Go name: "Type" for a type,
	// "Type.Field" for a field (see ReadSource).
	Docs map[string]string
	// EnumPkg is the package path whose defined string types are enums;
	// defined string types of other packages become string.
	EnumPkg string

	seen  map[reflect.Type]bool
	out   []string
	queue []reflect.Type
}

// Generate returns the declarations of roots and of every named type they
// reach, in the order first reached.
func (g *Generator) Generate(roots ...reflect.Type) (string, error) {
	g.seen = map[reflect.Type]bool{}
	g.out = nil
	g.queue = nil
	for _, t := range roots {
		if t.Name() == "" {
			return "", fmt.Errorf("root %v: not a named type", t)
		}
		g.enqueue(t)
	}
	for len(g.queue) > 0 {
		t := g.queue[0]
		g.queue = g.queue[1:]
		decl, err := g.declare(t)
		if err != nil {
			return "", fmt.Errorf("%s: %w", t.Name(), err)
		}
		g.out = append(g.out, decl)
	}
	return strings.Join(g.out, "\n"), nil
}

func (g *Generator) enqueue(t reflect.Type) {
	if !g.seen[t] {
		g.seen[t] = true
		g.queue = append(g.queue, t)
	}
}

// declare writes the declaration of the named type t.
func (g *Generator) declare(t reflect.Type) (string, error) {
	doc := comment("", g.Docs[t.Name()])
	if g.isEnum(t) {
		vals, err := g.enumValues(t)
		if err != nil {
			return "", err
		}
		quoted := make([]string, len(vals))
		for i, v := range vals {
			quoted[i] = strconv.Quote(v)
		}
		// The values as an array too: TypeScript cannot list a union's.
		return fmt.Sprintf("%[4]sexport type %[1]s = %[2]s;\nexport const %[1]sValues: readonly %[1]s[] = [%[3]s];\n",
			t.Name(), strings.Join(quoted, " | "), strings.Join(quoted, ", "), doc), nil
	}
	if t.Kind() != reflect.Struct {
		ts, err := g.typeOf(t, true)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%sexport type %s = %s;\n", doc, t.Name(), ts), nil
	}
	fs, err := g.fields(t)
	if err != nil {
		return "", err
	}
	if u := unionOf(fs); u != nil {
		return g.declareUnion(t, fs, u, doc)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%sexport interface %s {\n", doc, t.Name())
	for _, f := range fs {
		b.WriteString(f.line())
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// field is one JSON property of a struct.
type field struct {
	name     string
	ts       string
	optional bool
	union    string // the TagUnion tag, on the discriminant
	kind     string // the TagKind tag
	goType   reflect.Type
	doc      string
}

func (f field) line() string {
	return comment("  ", f.doc) + f.decl()
}

func (f field) decl() string {
	opt := ""
	if f.optional {
		opt = "?"
	}
	return fmt.Sprintf("  %s%s: %s;\n", propName(f.name), opt, f.ts)
}

// comment returns text as // lines with indent, or "" for no text.
func comment(indent, text string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(strings.TrimSpace(text), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			fmt.Fprintf(&b, "%s// %s\n", indent, l)
		}
	}
	return b.String()
}

// fields lists t's JSON properties, with embedded structs' fields inline
// as encoding/json does.
func (g *Generator) fields(t reflect.Type) ([]field, error) {
	var out []field
	for sf := range t.Fields() {
		tag, hasTag := sf.Tag.Lookup("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			et := sf.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				inner, err := g.fields(et)
				if err != nil {
					return nil, err
				}
				out = append(out, inner...)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" || !hasTag {
			name = sf.Name
		}
		f := field{name: name, goType: sf.Type, union: sf.Tag.Get(TagUnion), kind: sf.Tag.Get(TagKind), doc: g.Docs[t.Name()+"."+sf.Name]}
		optional := false
		for o := range strings.SplitSeq(opts, ",") {
			switch o {
			case "omitempty", "omitzero":
				optional = true
			case "string":
				f.ts = "string"
			}
		}
		f.optional = optional
		if f.ts == "" {
			ft := sf.Type
			if optional && ft.Kind() == reflect.Pointer {
				ft = ft.Elem() // absent, never null
			}
			ts, err := g.typeOf(ft, false)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", sf.Name, err)
			}
			f.ts = ts
		}
		if slices.ContainsFunc(out, func(o field) bool { return o.name == f.name }) {
			return nil, fmt.Errorf("field %s: JSON name %q used twice", sf.Name, f.name)
		}
		out = append(out, f)
	}
	return out, nil
}

// union is a parsed TagUnion: the discriminant and its members.
type union struct {
	disc    field
	members [][2]string // value, member name
}

func unionOf(fs []field) *union {
	for _, f := range fs {
		if f.union != "" {
			return &union{disc: f}
		}
	}
	return nil
}

// declareUnion writes t as "<T>Base" with the common fields, one
// interface per member, and T as their union. Each member declares the
// other members' fields as never, so that reading one without narrowing
// first is still allowed and gives undefined.
func (g *Generator) declareUnion(t reflect.Type, fs []field, u *union, doc string) (string, error) {
	vals, err := g.enumValues(u.disc.goType)
	if err != nil {
		return "", fmt.Errorf("discriminant %s: %w", u.disc.name, err)
	}
	for m := range strings.SplitSeq(u.disc.union, ",") {
		val, name, ok := strings.Cut(strings.TrimSpace(m), "=")
		if !ok || !slices.Contains(vals, val) || name == "" {
			return "", fmt.Errorf("%s %q: want value=Name for values %s", TagUnion, m, strings.Join(vals, ", "))
		}
		u.members = append(u.members, [2]string{val, name})
	}
	if len(u.members) != len(vals) {
		return "", fmt.Errorf("%s %q: want one member for each of %s", TagUnion, u.disc.union, strings.Join(vals, ", "))
	}
	for _, f := range fs {
		if f.kind != "" && !slices.Contains(vals, f.kind) {
			return "", fmt.Errorf("field %s: %s %q is not one of %s", f.name, TagKind, f.kind, strings.Join(vals, ", "))
		}
	}
	var b strings.Builder
	base := t.Name() + "Base"
	fmt.Fprintf(&b, "// %s holds the fields every %s has.\nexport interface %[1]s {\n", base, t.Name())
	for _, f := range fs {
		if f.kind == "" && f.union == "" {
			b.WriteString(f.line())
		}
	}
	b.WriteString("}\n")
	var names []string
	for _, m := range u.members {
		fmt.Fprintf(&b, "\n// %s is a %s of %s %q.\nexport interface %[1]s extends %[2]sBase {\n", m[1], t.Name(), u.disc.name, m[0])
		fmt.Fprintf(&b, "  %s: %s;\n", propName(u.disc.name), strconv.Quote(m[0]))
		for _, f := range fs {
			if f.kind == m[0] {
				b.WriteString(f.line())
			}
		}
		for _, f := range fs {
			if f.kind != "" && f.kind != m[0] {
				fmt.Fprintf(&b, "  %s?: never;\n", propName(f.name))
			}
		}
		b.WriteString("}\n")
		names = append(names, m[1])
	}
	fmt.Fprintf(&b, "\n%sexport type %s = %s;\n", doc, t.Name(), strings.Join(names, " | "))
	return b.String(), nil
}

var (
	timeType          = reflect.TypeFor[time.Time]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// typeOf returns the TypeScript type of t. Named types other than the
// well-known ones are referred to by name and declared later; top says t
// is the type being declared, so it must be spelled out.
func (g *Generator) typeOf(t reflect.Type, top bool) (string, error) {
	switch {
	case t == timeType:
		return "string", nil
	case t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType):
		return "", fmt.Errorf("type %v marshals itself: its JSON shape is unknown", t)
	case t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		return "string", nil
	}
	if !top && t.Name() != "" && t.PkgPath() != "" && (t.Kind() == reflect.Struct || g.isEnum(t)) {
		g.enqueue(t)
		return t.Name(), nil
	}
	switch t.Kind() {
	case reflect.Bool:
		return "boolean", nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number", nil
	case reflect.String:
		return "string", nil
	case reflect.Interface:
		return "unknown", nil
	case reflect.Pointer:
		elem, err := g.typeOf(t.Elem(), false)
		if err != nil {
			return "", err
		}
		return elem + " | null", nil
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return "string", nil // base64
		}
		elem, err := g.typeOf(t.Elem(), false)
		if err != nil {
			return "", err
		}
		if strings.Contains(elem, " ") {
			elem = "(" + elem + ")"
		}
		return elem + "[]", nil
	case reflect.Map:
		k := t.Key()
		if k.Kind() != reflect.String && !k.Implements(textMarshalerType) && !isInt(k) {
			return "", fmt.Errorf("map key %v: JSON keys are strings", k)
		}
		elem, err := g.typeOf(t.Elem(), false)
		if err != nil {
			return "", err
		}
		if g.isEnum(k) {
			// Not every value need be a key.
			g.enqueue(k)
			return fmt.Sprintf("Partial<Record<%s, %s>>", k.Name(), elem), nil
		}
		return fmt.Sprintf("Record<string, %s>", elem), nil
	case reflect.Struct:
		fs, err := g.fields(t)
		if err != nil {
			return "", err
		}
		var parts []string
		for _, f := range fs {
			parts = append(parts, strings.TrimSpace(f.decl()))
		}
		return "{ " + strings.Join(parts, " ") + " }", nil
	}
	return "", fmt.Errorf("type %v: no JSON form", t)
}

// isEnum says whether t is a string enum type of the enum package.
func (g *Generator) isEnum(t reflect.Type) bool {
	return isDefinedString(t) && t.PkgPath() == g.EnumPkg
}

func (g *Generator) enumValues(t reflect.Type) ([]string, error) {
	vals := g.Enums[t.Name()]
	if !g.isEnum(t) || len(vals) == 0 {
		return nil, fmt.Errorf("type %v: want a string type with constants of its own type (Name Type = \"value\")", t)
	}
	return vals, nil
}

func isDefinedString(t reflect.Type) bool {
	return t.Kind() == reflect.String && t.Name() != "" && t.Name() != "string"
}

func isInt(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// propName quotes a property name that is not a plain identifier.
func propName(s string) string {
	for i, r := range s {
		if r == '_' || r == '$' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9' {
			continue
		}
		return strconv.Quote(s)
	}
	if s == "" {
		return `""`
	}
	return s
}
