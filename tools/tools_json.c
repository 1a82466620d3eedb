/* tools — a tiny streaming JSON writer for `--json` output (top layer).
 *
 * Owns: object/array nesting, commas and indentation, string escaping
 * (control characters as \uXXXX or their short forms; bytes that are not
 * valid UTF-8 become U+FFFD so the output always parses).
 */
#include <assert.h>

#include "tools.h"

void tools_json_init(struct tools_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->has_items[0] = false;
}

/* Length of a valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
	uint32_t min = len == 4 ? 0x10000 : len == 3 ? 0x800 : 0x80;
	uint32_t cp;

	if (s[0] < 0xc2 || s[0] > 0xf4 || n < len)
		return 0;
	cp = s[0] & (0x3f >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static void put_escaped_char(FILE *f, unsigned char c)
{
	switch (c) {
	case '"': fputs("\\\"", f); break;
	case '\\': fputs("\\\\", f); break;
	case '\n': fputs("\\n", f); break;
	case '\r': fputs("\\r", f); break;
	case '\t': fputs("\\t", f); break;
	case '\b': fputs("\\b", f); break;
	case '\f': fputs("\\f", f); break;
	default:
		if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
}

static void put_string(FILE *f, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t n = strlen(str);

	fputc('"', f);
	for (size_t i = 0; i < n;) {
		size_t len = s[i] < 0x80 ? 1 : utf8_len(s + i, n - i);

		if (len == 1)
			put_escaped_char(f, s[i]);
		else if (len == 0)
			fputs("\\ufffd", f);
		else
			fwrite(s + i, 1, len, f);
		i += len ? len : 1;
	}
	fputc('"', f);
}

/* Comma, newline and indent before an item, then "key": when in an object. */
static void item_start(struct tools_json *j, const char *key)
{
	if (j->depth > 0) {
		fputs(j->has_items[j->depth] ? ",\n" : "\n", j->f);
		fprintf(j->f, "%*s", 2 * j->depth, "");
	}
	j->has_items[j->depth] = true;
	if (key) {
		put_string(j->f, key);
		fputs(": ", j->f);
	}
}

static void begin(struct tools_json *j, const char *key, char open)
{
	item_start(j, key);
	fputc(open, j->f);
	assert(j->depth + 1 < TOOLS_JSON_MAX_DEPTH); /* nesting is fixed by the code */
	j->depth++;
	j->has_items[j->depth] = false;
}

static void end(struct tools_json *j, char close)
{
	bool had_items = j->has_items[j->depth];

	assert(j->depth > 0);
	j->depth--;
	if (had_items)
		fprintf(j->f, "\n%*s", 2 * j->depth, "");
	fputc(close, j->f);
	if (j->depth == 0)
		fputc('\n', j->f);
}

void tools_json_obj_begin(struct tools_json *j, const char *key)
{
	begin(j, key, '{');
}

void tools_json_obj_end(struct tools_json *j)
{
	end(j, '}');
}

void tools_json_arr_begin(struct tools_json *j, const char *key)
{
	begin(j, key, '[');
}

void tools_json_arr_end(struct tools_json *j)
{
	end(j, ']');
}

void tools_json_str(struct tools_json *j, const char *key, const char *val)
{
	item_start(j, key);
	if (val)
		put_string(j->f, val);
	else
		fputs("null", j->f);
}

void tools_json_u64(struct tools_json *j, const char *key, uint64_t val)
{
	item_start(j, key);
	fprintf(j->f, "%llu", (unsigned long long)val);
}

void tools_json_bool(struct tools_json *j, const char *key, bool val)
{
	item_start(j, key);
	fputs(val ? "true" : "false", j->f);
}

/* A finite number with up to 6 significant digits; NaN/inf become null. */
void tools_json_f64(struct tools_json *j, const char *key, double val)
{
	item_start(j, key);
	if (val != val || val > 1e300 || val < -1e300)
		fputs("null", j->f);
	else
		fprintf(j->f, "%.6g", val);
}
