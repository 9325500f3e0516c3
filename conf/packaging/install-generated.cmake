# Runs at install time (install(SCRIPT) in conf/packaging/install.cmake), when CMAKE_INSTALL_PREFIX is the real prefix:
# writes the installed config (the repository's conf/seckilld.conf with the scripts folder and the schema named by
# absolute path) and the systemd unit (conf/seckilld.service.in), then installs both (file(INSTALL) honours DESTDIR).
set(prefix "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/+$" "" prefix "${prefix}")
if(prefix STREQUAL "/usr")
    set(SK_CONFDIR /etc/seckilld) # the FHS place, as GNUInstallDirs does for /usr
else()
    set(SK_CONFDIR "${prefix}/etc/seckilld")
endif()
set(SK_BINDIR "${prefix}/bin")
set(SK_DATADIR "${prefix}/share/seckilld")

file(READ "${SK_SOURCE_DIR}/conf/seckilld.conf" conf)
set(before "${conf}")
string(REPLACE "scripts = \"scripts\"," "scripts = \"${SK_DATADIR}/scripts\"," conf "${conf}")
string(REPLACE "    mysql = {\n" "    mysql = {\n        schema = \"${SK_DATADIR}/schema.sql\",\n" conf "${conf}")
string(REGEX MATCHALL "${SK_DATADIR}/" found "${conf}")
list(LENGTH found n)
if(NOT n EQUAL 2)
    message(FATAL_ERROR "conf/packaging/install-generated.cmake: conf/seckilld.conf no longer has the `scripts = \"scripts\",` "
                        "and `    mysql = {` lines this script rewrites for the installed copy; update it")
endif()
set(gen "${SK_BINARY_DIR}/install-generated")
file(WRITE "${gen}/seckilld.conf" "${conf}")
configure_file("${SK_SOURCE_DIR}/conf/seckilld.service.in" "${gen}/seckilld.service" @ONLY)

file(INSTALL "${gen}/seckilld.conf" DESTINATION "${SK_CONFDIR}" PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL "${gen}/seckilld.service" DESTINATION "${prefix}/lib/systemd/system"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
