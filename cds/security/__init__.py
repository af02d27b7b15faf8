"""Transport security and privacy helpers shared by the stages: DICOM TLS contexts and
certificate-bound AE titles, HTTPS clients with site CAs and client certificates, SMART Backend
Services client assertions, secrets, the site secret of patient keys, log privacy. Imports only
:mod:`cds.contracts`."""
