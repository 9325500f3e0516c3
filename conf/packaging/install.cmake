# Install rules (make install, make deb). The layout, for a prefix P (/usr/local by default, /usr in the .deb):
#   P/bin/seckilld
#   P/share/seckilld/scripts/, P/share/seckilld/schema.sql, P/share/seckilld/README.md
#   /etc/seckilld/seckilld.conf when P is /usr, else P/etc/seckilld/seckilld.conf
#   P/lib/systemd/system/seckilld.service
# The config and the unit name absolute paths under the prefix, which is only known at install time
# (`cmake --install --prefix`, CPack's /usr): conf/packaging/install-generated.cmake writes them then.
include(GNUInstallDirs)

install(TARGETS seckilld RUNTIME DESTINATION bin)
install(DIRECTORY scripts/ DESTINATION share/seckilld/scripts)
install(FILES conf/schema.sql README.md DESTINATION share/seckilld)
install(CODE "set(SK_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")\nset(SK_BINARY_DIR \"${CMAKE_BINARY_DIR}\")")
install(SCRIPT conf/packaging/install-generated.cmake)

# ===== make deb =====
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME seckilld)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "seckilld maintainers <seckilld@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "flash-sale server: a C core on libh2o running the sale as Lua 5.4 scripts")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: dpkg-shlibdeps (dpkg-dev) maps every linked .so to its Debian runtime package
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "redis-server, mariadb-server")
# /etc/seckilld/seckilld.conf is the operator's: an upgrade asks before replacing an edited one
file(WRITE ${CMAKE_BINARY_DIR}/debian/conffiles "/etc/seckilld/seckilld.conf\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON) # the debug info stays in the build tree
include(CPack)
