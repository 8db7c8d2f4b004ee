package tsgen

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
)

// Source is what the generator needs from a package's source that
// reflection cannot tell: the values of its string enums and its comments.
type Source struct {
	// Enums holds the string constants declared with an explicit type,
	// by type name, in declaration order: `PathDirect PathKind = "direct"`
	// is a value of PathKind.
	Enums map[string][]string
	// Docs holds the doc comments of types ("Type") and the doc or line
	// comments of struct fields ("Type.Field").
	Docs map[string]string
}

// ReadSource reads the Go package in dir, test files aside.
func ReadSource(dir string) (*Source, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	src := &Source{Enums: map[string][]string{}, Docs: map[string]string{}}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution|parser.ParseComments)
		if err != nil {
			return nil, fmt.Errorf("reading source: %w", err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok {
				continue
			}
			switch gd.Tok {
			case token.CONST:
				if err := src.addConsts(fset, gd); err != nil {
					return nil, err
				}
			case token.TYPE:
				src.addDocs(gd)
			}
		}
	}
	return src, nil
}

func (src *Source) addConsts(fset *token.FileSet, gd *ast.GenDecl) error {
	for _, spec := range gd.Specs {
		vs := spec.(*ast.ValueSpec)
		typ, ok := vs.Type.(*ast.Ident)
		if !ok || len(vs.Values) != len(vs.Names) {
			continue
		}
		for _, v := range vs.Values {
			lit, ok := v.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				continue
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return fmt.Errorf("%s: %w", fset.Position(lit.Pos()), err)
			}
			src.Enums[typ.Name] = append(src.Enums[typ.Name], s)
		}
	}
	return nil
}

func (src *Source) addDocs(gd *ast.GenDecl) {
	for _, spec := range gd.Specs {
		ts := spec.(*ast.TypeSpec)
		doc := ts.Doc
		if doc == nil && len(gd.Specs) == 1 {
			doc = gd.Doc
		}
		if text := strings.TrimSpace(doc.Text()); text != "" {
			src.Docs[ts.Name.Name] = text
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			continue
		}
		for _, f := range st.Fields.List {
			text := strings.TrimSpace(f.Doc.Text() + " " + f.Comment.Text())
			if text == "" {
				continue
			}
			for _, n := range f.Names {
				src.Docs[ts.Name.Name+"."+n.Name] = text
			}
		}
	}
}
