// Build-time generator for tests/unit/test_mpim_hash.c: prints, as a C header, g++'s own
// std::hash<std::string> of 300 strings (lengths 0-40, every byte value, fixed pseudo-random
// sequence), so the C version is checked against libstdc++ itself, not against copied numbers.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

int main()
{
    std::uint64_t x = 0x9E3779B97F4A7C15ull; // xorshift64: the same strings on every build
    auto next = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    std::printf("/* Generated at build time by gen_std_hash (g++ %s). Do not edit. */\n", __VERSION__);
    std::printf("static const struct std_hash_case { unsigned len; const char *bytes; unsigned long long hash; } "
                "std_hash_cases[] = {\n");
    for (int i = 0; i < 300; i++) {
        std::string s(i % 41, '\0');
        for (char &c : s)
            c = static_cast<char>(next() & 0xff);
        std::printf("    {%zu, \"", s.size());
        for (unsigned char c : s)
            std::printf("\\x%02x", c);
        std::printf("\", %zuull},\n", std::hash<std::string>{}(s));
    }
    std::printf("};\n");
    return 0;
}
