// One owner for every C library handle: CHandle<nftnl_rule, nftnl_rule_free> frees with the
// library's own function, once, also on the way out of an exception. (File descriptors have
// their own owner, Fd.)
#pragma once

#include <memory>
#include <new>

namespace nsegress {

template <auto Free>
struct CFree {
    template <typename T>
    void operator()(T* p) const noexcept {
        if (p) (void)Free(p);
    }
};

template <typename T, auto Free>
using CHandle = std::unique_ptr<T, CFree<Free>>;

// Owns what an allocator returned; a null pointer (out of memory) throws std::bad_alloc.
template <typename T, auto Free>
CHandle<T, Free> make_handle(T* p) {
    if (!p) throw std::bad_alloc();
    return CHandle<T, Free>(p);
}

}  // namespace nsegress
