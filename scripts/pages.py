#!/usr/bin/env python3
"""pages.py — the page sources of the vdelta command, turned into what the
build installs: man pages, the help text compiled into vdelta, and the
shell completions.

One source per command, tools/pages/vdelta-NAME.1.scd (scdoc(5) syntax),
gives both `vdelta help NAME` and vdelta-NAME(1), so they cannot disagree:

  NAME         "vdelta-NAME - SUMMARY": the summary `vdelta help` lists
  SYNOPSIS     one paragraph per form, each "*vdelta NAME* ARGS": Usage:
  DESCRIPTION  paragraphs, definition lists, bullet lists, literal blocks
  OPTIONS      a definition list, one term per option: "*-n*, *--dry-run*",
               "*--scan* _DIR_" (takes a value), "*--cache*=_none_|_kernel_"
               (takes one of these words); "## Heading" groups them
  other        EXIT STATUS, FILES, EXAMPLES, SEE ALSO, ...: the page only

Help text is the summary, SYNOPSIS, DESCRIPTION and OPTIONS rendered as
plain text.  The completions take each command's options from OPTIONS and
the kind of its arguments from the names in SYNOPSIS (DISK, LAYER, ... a
.vmdk; DIR, MOUNTPOINT a folder; FILE, IN, OUT any file).

  pages.py man  [--version V] [--commands PAGE...] SRC OUT
      a man page through scdoc (the footer says "vdelta V"); a line
      "; COMMANDS" or "; SEE-COMMANDS" in SRC becomes the list of commands
      or their pages, from the --commands pages
  pages.py help OUT.c OUT.h PAGE...   tools_page_NAME_summary / _usage
  pages.py bash OUT PAGE...           bash completion
  pages.py zsh  OUT PAGE...           zsh completion
  pages.py json PAGE...               what the tests read: options, kinds
"""
import json
import os
import re
import subprocess
import sys
import textwrap

WIDTH = 78     # help text: columns
COLUMN_MAX = 24  # help text: where option descriptions start, at most

VMDK_ARGS = {"DISK", "LAYER", "SNAPSHOT", "NEW", "PARENT", "TOP"}
DIR_ARGS = {"DIR", "MOUNTPOINT"}
FILE_ARGS = {"FILE", "IN", "OUT", "CONFIG"}
HELP_SECTIONS = ("SYNOPSIS", "DESCRIPTION", "OPTIONS")


class PageError(Exception):
    pass


# ---- parsing: the scdoc subset the pages use ---------------------------------

class Line:
    """One source line: its tab depth, its kind and its text."""

    def __init__(self, no, depth, kind, text):
        self.no, self.depth, self.kind, self.text = no, depth, kind, text


class Page:
    def __init__(self, path):
        self.path = path
        self.name, self.mansec, self.title_rest = None, None, ""
        self.sections = []  # [(heading, [Line])]
        with open(path, encoding="utf-8") as f:
            self._parse(f.read().split("\n"))

    def fail(self, no, msg):
        raise PageError("%s:%d: %s" % (self.path, no, msg))

    def _parse(self, lines):
        m = re.match(r"^([A-Za-z0-9_.@-]+)\(([0-9])\)(.*)$", lines[0])
        if not m:
            self.fail(1, "expected 'name(section)' on the first line")
        self.name, self.mansec, self.title_rest = m.group(1), m.group(2), m.group(3)
        cur = None
        literal = None
        for no, raw in enumerate(lines[1:], start=2):
            if literal is not None:
                if raw.strip() == "```":
                    cur.append(Line(no, literal, "literal-end", ""))
                    literal = None
                else:
                    cur.append(Line(no, literal, "literal", raw[literal:]))
                continue
            depth = len(raw) - len(raw.lstrip("\t"))
            text = raw[depth:]
            if text.startswith(" "):
                if cur and cur[-1].kind in ("item", "more") and text.startswith("  "):
                    cur.append(Line(no, depth, "more", text[2:]))
                    continue
                self.fail(no, "indent with tabs")
            if text == "":
                if cur is not None:
                    cur.append(Line(no, 0, "blank", ""))
                continue
            if text.startswith("; "):
                if cur is not None:
                    cur.append(Line(no, depth, "comment", text[2:]))
                continue
            if text.startswith("# ") and depth == 0:
                cur = []
                self.sections.append((text[2:].strip(), cur))
                continue
            if cur is None:
                self.fail(no, "text before the first '# SECTION'")
            if text.startswith("## ") and depth == 0:
                cur.append(Line(no, 0, "sub", text[3:].strip()))
            elif text.startswith("```"):
                cur.append(Line(no, depth, "literal-begin", ""))
                literal = depth
            elif text.startswith("- ") or text.startswith(". "):
                cur.append(Line(no, depth, "item", text[2:]))
            elif text[0] in "[|]":
                self.fail(no, "tables are not rendered in help text: use a definition list")
            else:
                cur.append(Line(no, depth, "text", text))
        if literal is not None:
            self.fail(len(lines), "literal block not closed")

    def section(self, heading):
        for h, body in self.sections:
            if h == heading:
                return body
        return None

    # -- what a command page must hold --
    def command(self):
        """NAME for vdelta-NAME, else None."""
        return self.name[len("vdelta-"):] if self.name.startswith("vdelta-") else None

    def summary(self):
        body = self.section("NAME")
        text = " ".join(l.text for l in (body or []) if l.kind == "text")
        m = re.match(r"^(\S+) - (.+)$", text)
        if not m or unmark(m.group(1)) != self.name:
            self.fail(1, "NAME must read '%s - SUMMARY'" % self.name)
        return unmark(m.group(2))


# ---- inline markup ------------------------------------------------------------

def spans(text):
    """[(kind, text)], kind 'b' (bold), 'u' (underline) or '' — as scdoc
    reads *bold*, _underline_ (an underscore inside a word is a letter),
    backslash escapes and a trailing '++' (a line break: 'br')."""
    out, buf, fmt, last = [], [], "", " "
    i, n = 0, len(text)

    def flush(kind):
        if buf:
            out.append((kind, "".join(buf)))
            buf.clear()

    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if ch == "\\" and nxt:
            buf.append(nxt)
            i += 2
            continue
        if ch == "*" and fmt != "u":
            flush(fmt)
            fmt = "" if fmt == "b" else "b"
        elif ch == "_" and fmt != "b" and (not last.isalnum() or
                                           (fmt == "u" and not nxt.isalnum())):
            flush(fmt)
            fmt = "" if fmt == "u" else "u"
        elif ch == "+" and text[i:] == "++":
            flush(fmt)
            out.append(("br", ""))
            break
        else:
            buf.append(ch)
            last = ch
        i += 1
    flush(fmt)
    if fmt:
        raise ValueError("unclosed %s in: %s" % ("*" if fmt == "b" else "_", text))
    return out


def unmark(text):
    return "".join(t for k, t in spans(text) if k != "br")


# ---- help text ----------------------------------------------------------------

def wrap(text, indent, first=None, width=WIDTH):
    first = indent if first is None else first
    return textwrap.fill(text, width=width, initial_indent=first,
                         subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


class Blocks:
    """A section's lines as blocks: ('para', depth, text, term?),
    ('item', depth, text), ('literal', depth, [lines]), ('sub', text)."""

    def __init__(self, page, lines):
        self.page, self.out = page, []
        para, literal = None, None
        for i, l in enumerate(lines):
            try:
                if l.kind == "comment":
                    continue
                if literal is not None:
                    if l.kind == "literal-end":
                        self.out.append(("literal", literal[0], literal[1]))
                        literal = None
                    else:
                        literal[1].append(l.text)
                    continue
                if l.kind == "literal-begin":
                    para = None
                    literal = (l.depth, [])
                elif l.kind == "blank":
                    para = None
                elif l.kind == "sub":
                    para = None
                    self.out.append(("sub", unmark(l.text)))
                elif l.kind in ("item", "more"):
                    if l.kind == "item":
                        para = ["item", l.depth, unmark(l.text)]
                        self.out.append(para)
                    else:
                        para[2] += " " + unmark(l.text)
                elif para is not None and para[0] == "para" and para[1] == l.depth:
                    brk = para[2].endswith("\n")
                    para[2] += ("" if brk else " ") + self.text(l)
                else:
                    if para is not None and para[0] == "para" and l.depth == para[1] + 1:
                        para[3] = True  # the line before is a term of l
                    para = ["para", l.depth, self.text(l), False]
                    self.out.append(para)
            except ValueError as e:
                page.fail(l.no, str(e))

    @staticmethod
    def text(l):
        s = spans(l.text)
        return "".join(t for k, t in s if k != "br") + ("\n" if s and s[-1][0] == "br" else "")


def render(blocks, column):
    """Plain text of a section's blocks.  A term's description starts at
    `column`, on the term's line when the term leaves room; terms and list
    items follow each other, any other block is set off by a blank line."""
    out, pending, prev = [], None, None

    def indent_of(depth):
        return "" if depth == 0 else " " * (column + 4 * (depth - 1))

    def gap():
        if out and out[-1] != "":
            out.append("")

    for b in blocks:
        kind = b[0]
        if kind == "sub":
            gap()
            out.append(b[1] + ":")
            prev = "sub"
            continue
        ind = indent_of(b[1])
        if kind == "literal":
            gap()
            out.extend((ind + "  " + x).rstrip() for x in b[2])
            out.append("")
            prev = "literal"
            continue
        if kind == "item":
            if prev not in ("item", "sub"):
                gap()
            out.append(wrap(b[2], ind + "  ", ind + "- "))
            prev = "item"
            continue
        text, is_term = b[2], b[3]
        if is_term:
            if prev not in ("term", "desc", "sub"):
                gap()
            if pending is not None:
                out.append(pending)
            pending = ("  " if b[1] == 0 else ind + "  ") + text.strip()
            prev = "term"
            continue
        for i, p in enumerate(x for x in text.split("\n") if x.strip()):
            if pending is not None:
                first, pending = pending, None
                if len(first) + 2 <= len(ind):
                    out.append(wrap(p, ind, first.ljust(len(ind))))
                else:
                    out.append(first)
                    out.append(wrap(p, ind))
            else:
                if b[1] == 0 or prev == "desc" or i > 0:
                    gap()
                out.append(wrap(p, ind))
        prev = "desc" if b[1] > 0 else "para"
    if pending is not None:
        out.append(pending)
    while out and out[-1] == "":
        out.pop()
    while out and out[0] == "":
        out.pop(0)
    return "\n".join(out)


def term_column(page):
    """Where option descriptions start: past the longest term that fits."""
    width = 0
    for h in ("DESCRIPTION", "OPTIONS"):
        for b in Blocks(page, page.section(h) or []).out:
            if b[0] == "para" and b[3] and b[1] == 0:
                w = len(b[2].strip()) + 4
                if w <= COLUMN_MAX:
                    width = max(width, w)
    return max(width, 8)


def synopsis(page):
    """The usage forms: 'ARGS' after 'vdelta NAME ' for each."""
    cmd = page.command()
    forms = []
    for b in Blocks(page, page.section("SYNOPSIS") or []).out:
        if b[0] != "para":
            continue
        for form in b[2].split("\n"):
            form = " ".join(form.split())
            if not form:
                continue
            prefix = "vdelta %s" % cmd
            if form != prefix and not form.startswith(prefix + " "):
                page.fail(1, "SYNOPSIS form must begin with '*%s*': %s" % (prefix, form))
            forms.append(form[len(prefix):].strip())
    if not forms:
        page.fail(1, "no SYNOPSIS")
    return forms


def wrap_form(form, lead):
    """A usage form wrapped under its arguments, never inside [...]."""
    depth, chars = 0, []
    for ch in form:
        depth += ch == "["
        depth -= ch == "]"
        chars.append("\0" if ch == " " and depth > 0 else ch)
    text = wrap("".join(chars), " " * len(lead), lead)
    return text.replace("\0", " ")


def help_text(page):
    """(summary, usage): what struct tools_cmd holds (tools/tools.h)."""
    cmd = page.command()
    if cmd is None:
        page.fail(1, "a command page is named vdelta-NAME")
    for h in ("NAME", "SYNOPSIS", "DESCRIPTION"):
        if page.section(h) is None:
            page.fail(1, "no '# %s' section" % h)
    column = term_column(page)
    forms = synopsis(page)
    lead = "Usage: vdelta %s " % cmd
    usage = [wrap_form(forms[0], lead)[len(lead):]]
    for f in forms[1:]:
        usage.append(wrap_form(f, "       vdelta %s " % cmd))
    parts = ["\n".join(usage)]
    desc = render(Blocks(page, page.section("DESCRIPTION")).out, column)
    if desc:
        parts.append(desc)
    opts = page.section("OPTIONS")
    if opts:
        blocks = Blocks(page, opts).out
        body = render(blocks, column)
        if blocks and blocks[0][0] != "sub":
            body = "Options:\n" + body
        parts.append(body)
    return page.summary(), "\n\n".join(parts)


def c_string(s, indent="\t"):
    def esc(x):
        return (x.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t"))
    lines = s.split("\n")
    out = []
    for i, l in enumerate(lines):
        nl = "\\n" if i < len(lines) - 1 else ""
        out.append('%s"%s%s"' % (indent, esc(l), nl))
    return "\n".join(out)


def cmd_help(outc, outh, paths):
    pages = [Page(p) for p in paths]
    src = os.path.relpath(os.path.dirname(os.path.abspath(paths[0])),
                          os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    head = ("/* Generated by scripts/pages.py from %s/vdelta-*.1.scd: edit the pages,\n"
            " * not this file.  The help text of each command (tools.h, TOOLS_PAGE). */\n"
            % src)
    c, h = [head, '#include "tools_pages.h"\n'], [head, "#ifndef VDELTA_TOOLS_PAGES_H\n",
                                                  "#define VDELTA_TOOLS_PAGES_H\n\n"]
    for p in pages:
        summary, usage = help_text(p)
        ident = p.command().replace("-", "_")
        c.append("\nconst char tools_page_%s_summary[] =\n%s;\n" % (ident, c_string(summary)))
        c.append("const char tools_page_%s_usage[] =\n%s;\n" % (ident, c_string(usage)))
        h.append("extern const char tools_page_%s_summary[], tools_page_%s_usage[];\n"
                 % (ident, ident))
    h.append("\n/* .summary and .usage of the tools_cmd of command n, from its page */\n"
             "#define TOOLS_PAGE(n) .summary = tools_page_##n##_summary, "
             ".usage = tools_page_##n##_usage\n\n#endif\n")
    write(outc, "".join(c))
    write(outh, "".join(h))


# ---- options and arguments, for the completions and the tests -------------------

def term_options(page, line):
    """Options of one OPTIONS term: ([names], value) where value is None
    (a flag), ('kind', vmdk|dir|file|'') or ('words', [...])."""
    names, metas = [], []
    try:
        for kind, text in spans(line):
            if kind == "b":
                names += [w for w in re.split(r"[,\s]+", text) if w.startswith("-")]
            elif kind == "u":
                metas.append(text)
    except ValueError as e:
        page.fail(1, str(e))
    if not metas:
        return names, None
    if all(re.match(r"^[a-z][a-z0-9-]*$", m) for m in metas):
        return names, ("words", metas)
    return names, ("kind", arg_kind(metas[0]))


def arg_kind(meta):
    meta = re.sub(r"[^A-Z]", "", meta)
    if meta in VMDK_ARGS:
        return "vmdk"
    if meta in DIR_ARGS:
        return "dir"
    if meta in FILE_ARGS:
        return "file"
    return ""


def options(page):
    """[(names, value, description)] of the OPTIONS terms."""
    body = page.section("OPTIONS") or []
    out = []
    lines = [l for l in body if l.kind not in ("comment",)]
    for i, l in enumerate(lines):
        if l.kind != "text" or l.depth != 0:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else None
        if not nxt or nxt.depth != 1 or nxt.kind == "blank":
            continue
        names, value = term_options(page, l.text)
        if not names:
            page.fail(l.no, "an OPTIONS term names no option (*-x*, *--long*)")
        out.append((names, value, unmark(nxt.text)))
    return out


def positional_kinds(page):
    """Kinds of the arguments in SYNOPSIS that are not option values."""
    takes = {}
    for names, value, _ in options(page):
        for n in names:
            takes[n] = value is not None
    kinds = set()
    for l in page.section("SYNOPSIS") or []:
        if l.kind != "text":
            continue
        prev_opt = None
        for kind, text in spans(l.text):
            if kind == "b":
                words = text.split()
                prev_opt = words[-1] if words and words[-1].startswith("-") else None
            elif kind == "u":
                if not (prev_opt and takes.get(prev_opt)):
                    k = arg_kind(text)
                    if k:
                        kinds.add(k)
                prev_opt = None
            elif text.strip() not in ("", "="):
                prev_opt = None
    return kinds


def commands(paths):
    out = []
    for path in paths:
        p = Page(path)
        if p.command() is None:
            continue
        out.append({"name": p.command(), "summary": p.summary(),
                    "options": [{"names": n, "value": v, "desc": d}
                                for n, v, d in options(p)],
                    "args": sorted(positional_kinds(p))})
    return out


def cmd_json(paths):
    json.dump(commands(paths), sys.stdout, indent=1)
    sys.stdout.write("\n")


# ---- bash ----------------------------------------------------------------------

BASH_HEAD = r'''# bash completion for vdelta(1).
# Generated by scripts/pages.py from the command pages (tools/pages/): edit
# those, not this file.  Commands, each command's options and the values
# some of them take, .vmdk files for disks, folders for DIR and MOUNTPOINT.

_vdelta_commands='%(commands)s'

# COMPREPLY: the names matching $1 of the kinds $2... (vmdk: .vmdk files
# and folders to go down; dir; file)
_vdelta_files()
{
	local IFS=$'\n' cur=$1 k
	shift
	compopt -o filenames 2>/dev/null
	COMPREPLY=()
	for k in "$@"; do
		case $k in
		vmdk) COMPREPLY+=($(compgen -d -- "$cur"))
			COMPREPLY+=($(compgen -f -X '!*.[vV][mM][dD][kK]' -- "$cur")) ;;
		dir) COMPREPLY+=($(compgen -d -- "$cur")) ;;
		file) COMPREPLY+=($(compgen -f -- "$cur")) ;;
		esac
	done
}

_vdelta()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev='' cmd='' i
	COMPREPLY=()
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		-*) ;;
		*) cmd=${COMP_WORDS[i]}; break ;;
		esac
	done
	((COMP_CWORD > 1)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	# "--opt=value": '=' is a word of its own (COMP_WORDBREAKS)
	if [ "$cur" = = ]; then
		cur=''
	elif [ "$prev" = = ] && ((COMP_CWORD > 2)); then
		prev=${COMP_WORDS[COMP_CWORD - 2]}
	fi
	case $cmd in
	'')
		case $cur in
		-*) COMPREPLY=($(compgen -W '--help --version' -- "$cur")) ;;
		*) COMPREPLY=($(compgen -W "$_vdelta_commands" -- "$cur")) ;;
		esac ;;
	help) COMPREPLY=($(compgen -W "$_vdelta_commands" -- "$cur")) ;;
%(cases)s
	esac
}
'''


def bash_word(s):
    return "'" + s.replace("'", "'\\''") + "'"


def bash_command(c):
    lines = ["\t%s)" % c["name"]]
    words, values = {}, {}
    for o in c["options"]:
        v = o["value"]
        if v is None:
            continue
        if v[0] == "words":
            words.setdefault(" ".join(v[1]), []).extend(o["names"])
        else:
            values.setdefault(v[1], []).extend(o["names"])
    for w, names in words.items():
        lines.append("\t\t%s) COMPREPLY=($(compgen -W %s -- \"$cur\")); return ;;"
                     % ("|".join(names), bash_word(w)))
    for kind, names in values.items():
        act = "_vdelta_files \"$cur\" %s; " % kind if kind else ""
        lines.append("\t\t%s) %sreturn ;;" % ("|".join(names), act))
    if len(lines) > 1:
        lines.insert(1, "\t\tcase $prev in")
        lines.append("\t\tesac")
    opts = [n for o in c["options"] for n in o["names"]] + ["--help"]
    lines.append("\t\tcase $cur in")
    lines.append("\t\t-*) COMPREPLY=($(compgen -W %s -- \"$cur\")) ;;"
                 % bash_word(" ".join(opts)))
    if c["args"]:
        kinds = ["file"] if "file" in c["args"] else c["args"]
        if "vmdk" in kinds and "dir" in kinds:
            kinds.remove("dir")  # folders come with the .vmdk files
        lines.append("\t\t*) _vdelta_files \"$cur\" %s ;;" % " ".join(kinds))
    lines.append("\t\tesac ;;")
    return "\n".join(lines)


def cmd_bash(out, paths):
    cs = commands(paths)
    text = BASH_HEAD % {"commands": " ".join(c["name"] for c in cs),
                        "cases": "\n".join(bash_command(c) for c in cs)}
    text += "complete -F _vdelta vdelta\n"
    write(out, text)


# ---- zsh -----------------------------------------------------------------------

def zsh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def zsh_desc(s):
    s = s.split(". ")[0].rstrip(".")
    return re.sub(r"([\[\]:\\])", r"\\\1", s)


ZSH_ACTION = {"vmdk": "_files -g '*.(#i)vmdk(-.)'", "dir": "_files -/", "file": "_files",
              "": " "}


def zsh_command(c):
    specs = []
    for o in c["options"]:
        v, d = o["value"], zsh_desc(o["desc"])
        for n in o["names"]:
            if v is None:
                specs.append("%s[%s]" % (n, d))
                continue
            sep = "=" if n.startswith("--") else "+"
            act = "(%s)" % " ".join(v[1]) if v[0] == "words" else ZSH_ACTION[v[1]]
            specs.append("%s%s[%s]:%s:%s" % (n, sep, d, "value", act))
    for k in c["args"] or []:
        specs.append("*:%s:%s" % ({"vmdk": "disk", "dir": "folder", "file": "file"}[k],
                                  ZSH_ACTION[k]))
    body = " \\\n\t\t\t".join(zsh_quote(s) for s in specs)
    return "\t\t%s)\n\t\t\t_arguments -s %s ;;" % (c["name"], body)


def cmd_zsh(out, paths):
    cs = commands(paths)
    names = "\n".join("\t%s" % zsh_quote("%s:%s" % (c["name"], zsh_desc(c["summary"])))
                      for c in cs)
    text = ("#compdef vdelta\n"
            "# zsh completion for vdelta(1).  Generated by scripts/pages.py from the\n"
            "# command pages (tools/pages/): edit those, not this file.\n\n"
            "local -a _vdelta_cmds\n_vdelta_cmds=(\n%s\n)\n\n"
            "local curcontext=$curcontext state line\n"
            "_arguments -C '(- *)--help[list the commands]' "
            "'(- *)--version[the version and commit]' \\\n"
            "\t'1:command:->command' '*::argument:->argument'\n"
            "case $state in\n"
            "command) _describe -t commands 'vdelta command' _vdelta_cmds ;;\n"
            "argument)\n\tcase $line[1] in\n"
            "\t\thelp) _describe -t commands 'vdelta command' _vdelta_cmds ;;\n"
            "%s\n\tesac ;;\nesac\n") % (names, "\n".join(zsh_command(c) for c in cs))
    write(out, text)


# ---- man -------------------------------------------------------------------------

def command_list(paths):
    out = []
    for c in commands(paths):
        out += ["*vdelta %s*" % c["name"], "\t%s; *vdelta-%s*(1)." % (c["summary"], c["name"]),
                ""]
    return out


def cmd_man(src, out, version, cmd_pages):
    Page(src)  # the same checks as help
    with open(src, encoding="utf-8") as f:
        lines = f.read().split("\n")
    m = re.match(r"^([^ (]+\([0-9]\))(.*)$", lines[0])
    if version and not m.group(2).strip():
        lines[0] = '%s "vdelta %s"' % (m.group(1), version)
    text = []
    for l in lines:
        if l == "; COMMANDS":
            text += command_list(cmd_pages)
        elif l == "; SEE-COMMANDS":
            text.append(", ".join("*vdelta-%s*(1)" % c["name"] for c in commands(cmd_pages)))
        else:
            text.append(l)
    # scdoc takes no '@' in a page's name (vdelta-mount@.service): it reads
    # a stand-in, put back in the .TH line
    name = m.group(1)[:m.group(1).index("(")]
    text[0] = text[0].replace(name, name.replace("@", "-AT-"), 1)
    r = subprocess.run(["scdoc"], input="\n".join(text).encode(), capture_output=True)
    if r.returncode != 0:
        raise PageError("%s: scdoc: %s" % (src, r.stderr.decode().strip()))
    roff = r.stdout.decode().replace('.TH "%s"' % name.replace("@", "-AT-"),
                                      '.TH "%s"' % name, 1)
    write(out, roff)


# ---- main -------------------------------------------------------------------------

def write(path, text):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    mode, args = argv[1], argv[2:]
    if mode == "man":
        version, cmd_pages = None, []
        while args and args[0].startswith("--"):
            if args[0] == "--version":
                version, args = args[1], args[2:]
            elif args[0] == "--commands":
                args = args[1:]
                while len(args) > 2:
                    cmd_pages.append(args.pop(0))
            else:
                sys.exit("pages.py: unknown option " + args[0])
        cmd_man(args[0], args[1], version, cmd_pages)
    elif mode == "help":
        cmd_help(args[0], args[1], args[2:])
    elif mode == "bash":
        cmd_bash(args[0], args[1:])
    elif mode == "zsh":
        cmd_zsh(args[0], args[1:])
    elif mode == "json":
        cmd_json(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except PageError as e:
        sys.exit("pages.py: %s" % e)
