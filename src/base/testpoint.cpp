#include "nsegress/testpoint.hpp"

namespace nsegress::testing {

// Empty in every binary except nsegress_testhooks (see testpoint.hpp).
Hooks g_hooks;

}  // namespace nsegress::testing
