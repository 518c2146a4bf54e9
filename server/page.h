// The page served at `/`: one self-contained HTML file (server/page.html, no CDN, no npm),
// compiled into the binary at build time (server/CMakeLists.txt).
#pragma once

namespace herd::server {
const char* page_html();
}
