// A small PTX reader: directives only (.version, .target, .entry, .param, .maxntid/.reqntid, .shared).
// Instructions are not interpreted; the simulator runs the C++ build of the same kernel instead.
#include "ptx.h"

#include <cctype>
#include <cstdlib>
#include <map>

namespace mobius_sim::ptx {
namespace {

std::string strip_comments(std::string_view in) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size();) {
        if (in.compare(i, 2, "//") == 0) {
            while (i < in.size() && in[i] != '\n') ++i;
        } else if (in.compare(i, 2, "/*") == 0) {
            const std::size_t end = in.find("*/", i + 2);
            i = end == std::string_view::npos ? in.size() : end + 2;
            out += ' ';
        } else {
            out += in[i++];
        }
    }
    return out;
}

bool is_ident(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || c == '%' || c == '.'; }

struct Cursor {
    const std::string& s;
    std::size_t i = 0;

    void skip_space() {
        while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    }
    std::string word() {  // a directive, type or identifier such as .param, .u64, name_param_0
        skip_space();
        const std::size_t b = i;
        while (i < s.size() && is_ident(s[i])) ++i;
        return s.substr(b, i - b);
    }
    bool eat(char c) {
        skip_space();
        if (i < s.size() && s[i] == c) {
            ++i;
            return true;
        }
        return false;
    }
    unsigned long number() {
        skip_space();
        char* end = nullptr;
        const unsigned long v = std::strtoul(s.c_str() + i, &end, 10);
        i = static_cast<std::size_t>(end - s.c_str());
        return v;
    }
};

unsigned type_bytes(const std::string& t) {
    if (t.size() < 3) return 0;
    const std::string bits = t.substr(2);
    if (bits == "8") return 1;
    if (bits == "16") return 2;
    if (bits == "32") return 4;
    if (bits == "64") return 8;
    return 0;
}

// Reads `[.align N] .type name[count]` (after .param or .shared) and returns its size in bytes (0 if malformed).
unsigned declaration_bytes(Cursor& c, std::string* name) {
    std::string w = c.word();
    if (w == ".align") {
        c.number();
        w = c.word();
    }
    const unsigned elem = type_bytes(w);
    *name = c.word();
    unsigned long count = 1;
    if (c.eat('[')) {
        c.skip_space();
        if (c.i < c.s.size() && c.s[c.i] == ']') count = 0;  // extern array: size given at launch
        else count = c.number();
        if (!c.eat(']')) return 0;
    }
    return static_cast<unsigned>(elem * count);
}

bool contains_token(const std::string& text, const std::string& name) {
    for (std::size_t p = text.find(name); p != std::string::npos; p = text.find(name, p + 1)) {
        const bool left = p == 0 || !is_ident(text[p - 1]);
        const bool right = p + name.size() >= text.size() || !is_ident(text[p + name.size()]);
        if (left && right) return true;
    }
    return false;
}

}  // namespace

bool parse(std::string_view text, Module& module, std::string& error) {
    const std::string s = strip_comments(text);
    Cursor c{s};
    bool has_version = false, has_target = false;
    std::map<std::string, unsigned> module_shared;
    module = {};
    std::size_t depth = 0;
    while (c.i < s.size()) {
        c.skip_space();
        if (c.i >= s.size()) break;
        const char ch = s[c.i];
        if (ch == '{') { ++depth; ++c.i; continue; }
        if (ch == '}') {
            if (depth == 0) { error = "unbalanced '}'"; return false; }
            --depth; ++c.i; continue;
        }
        if (ch != '.') { ++c.i; continue; }
        const std::string w = c.word();
        if (depth != 0) continue;
        if (w == ".version") {
            has_version = true;
        } else if (w == ".target") {
            const std::string t = c.word();
            if (t.rfind("sm_", 0) != 0) { error = "unsupported .target " + t; return false; }
            module.target_sm = static_cast<unsigned>(std::strtoul(t.c_str() + 3, nullptr, 10));
            has_target = true;
        } else if (w == ".shared") {
            std::string name;
            const unsigned bytes = declaration_bytes(c, &name);
            if (!name.empty()) module_shared[name] = bytes;
        } else if (w == ".entry") {
            Entry e;
            e.name = c.word();
            if (e.name.empty() || !c.eat('(')) { error = "malformed .entry"; return false; }
            while (!c.eat(')')) {
                if (c.word() != ".param") { error = "malformed parameter list of " + e.name; return false; }
                std::string pname;
                const unsigned bytes = declaration_bytes(c, &pname);
                if (bytes == 0) { error = "malformed parameter " + pname + " of " + e.name; return false; }
                e.param_sizes.push_back(bytes);
                c.eat(',');
            }
            // performance directives up to the body
            for (c.skip_space(); c.i < s.size() && s[c.i] != '{'; c.skip_space()) {
                const std::string d = c.word();
                if (d.empty()) { error = "unexpected text before the body of " + e.name; return false; }
                if (d == ".maxntid" || d == ".reqntid") {
                    unsigned long n = c.number();
                    while (c.eat(',')) n *= c.number();
                    e.max_threads = static_cast<unsigned>(n);
                } else {
                    c.number();
                    while (c.eat(',')) c.number();
                }
            }
            if (!c.eat('{')) { error = "missing body of " + e.name; return false; }
            const std::size_t body_begin = c.i;
            std::size_t d = 1;
            for (; c.i < s.size() && d > 0; ++c.i) d += s[c.i] == '{' ? 1 : s[c.i] == '}' ? -1 : 0;
            if (d != 0) { error = "unterminated body of " + e.name; return false; }
            const std::string body = s.substr(body_begin, c.i - 1 - body_begin);
            Cursor b{body};
            for (std::size_t p = body.find(".shared"); p != std::string::npos; p = body.find(".shared", p + 1)) {
                b.i = p + 7;
                if (p > 0 && is_ident(body[p - 1])) continue;               // e.g. ld.shared
                if (p + 7 < body.size() && body[p + 7] == '.') continue;    // e.g. .shared.u32 in an instruction
                std::string name;
                e.static_shared_bytes += declaration_bytes(b, &name);
            }
            for (const auto& [name, bytes] : module_shared)
                if (contains_token(body, name)) e.static_shared_bytes += bytes;
            module.entries.push_back(std::move(e));
        }
    }
    if (!has_version || !has_target) {
        error = "not a PTX module (no .version / .target directive)";
        return false;
    }
    if (depth != 0) {
        error = "unbalanced braces";
        return false;
    }
    return true;
}

}  // namespace mobius_sim::ptx
