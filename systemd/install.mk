# systemd/install.mk — `make install`: binary, systemd units and default configs.
# DESTDIR stages the tree for a package; PREFIX and UNITDIR move it.
PREFIX  ?= /usr/local
UNITDIR ?= /etc/systemd/system
SYSCONF ?= /etc/octet
DOCDIR  ?= $(PREFIX)/share/doc/octet

.PHONY: install uninstall

install: build ## install bin/octet, the systemd units and /etc/octet/*.toml (existing configs are kept)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/octet
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's#/usr/local/bin/octet#$(PREFIX)/bin/octet#; s#/etc/octet/#$(SYSCONF)/#; s#/usr/local/share/doc/octet#$(DOCDIR)#' \
	  systemd/octet.service > $(DESTDIR)$(UNITDIR)/octet.service
	install -m 0644 systemd/octet.socket systemd/octet-http.socket $(DESTDIR)$(UNITDIR)/
	install -d -m 0755 $(DESTDIR)$(SYSCONF)
	@for f in octet.toml tuning.toml; do \
	  if [ -e $(DESTDIR)$(SYSCONF)/$$f ]; then echo "keeping $(DESTDIR)$(SYSCONF)/$$f"; \
	  else install -m 0644 configs/$$f $(DESTDIR)$(SYSCONF)/$$f; fi; done
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now octet.socket octet-http.socket octet.service"
	@echo "models go in /var/lib/octet/models (created by systemd on first start)"

uninstall: ## remove what install laid out, except /etc/octet
	rm -f $(DESTDIR)$(PREFIX)/bin/octet $(DESTDIR)$(UNITDIR)/octet.service \
	  $(DESTDIR)$(UNITDIR)/octet.socket $(DESTDIR)$(UNITDIR)/octet-http.socket $(DESTDIR)$(DOCDIR)/README.md
